"""Stage-1 training throughput of the ``cpu`` recipe on a busy machine, per thread setting.

    python -m bench.busy_machine                      # 0, 1 and 2 competing busy processes
    python -m bench.busy_machine --competitors 0 1 --steps 12

Each row runs real stage-1 steps (EfficientNet-Lite0, 128x64, batch 32, channels_last,
cross-entropy + SGD on the GRN, as ``train_stage1`` does) in a fresh interpreter, so that
OpenMP settings made through the environment take effect before torch loads, while
``--competitors`` processes each keep one core busy (a pure-Python spin loop, the kind of
load another program puts on a laptop). Settings:

* ``fmn auto``: ``FMN_THREADS`` unset, the project's default: torch's count lowered to the cores found
  idle before training (``fmn_core/utils/threads.py``).
* ``torch default``: ``FMN_THREADS=off``, what torch picks alone (one OpenMP thread per core).
* ``1 thread``: ``FMN_THREADS=1``.
* ``passive wait``: torch's threads (``FMN_THREADS=off``), ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at a barrier).

Prints a table (images/s and the ratio to the idle figure of the same setting, measured in this
run) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fmn_core.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

SETTINGS = {
    "fmn auto": {},
    "torch default": {"FMN_THREADS": "off"},
    "1 thread": {"FMN_THREADS": "1"},
    "passive wait": {"FMN_THREADS": "off", "OMP_WAIT_POLICY": "PASSIVE"},
}

CHILD = r"""
import json, sys, time
import torch
from fmn_core.engine import preset
from fmn_core.engine.checkpoint import build_model
from fmn_core.losses import identity_loss
from fmn_core.utils.threads import configure_cpu_threads

steps, warmup, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
threads = configure_cpu_threads()
config = preset("cpu", pretrained="none", batch_size=batch)
torch.manual_seed(0)
model = build_model(config, 485).to(memory_format=torch.channels_last)
for module in model.local_modules():
    module.requires_grad_(False)
model.train()
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
images = torch.randn(batch, 3, *config.input_size).contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 485, (batch,))
times = []
for step in range(warmup + steps):
    start = time.perf_counter()
    loss = identity_loss(model(images, branch="grn").grn_logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if step >= warmup:
        times.append(time.perf_counter() - start)
print(json.dumps({"threads": threads, "step_seconds": times}))
"""




def start_competitors(count: int) -> list[subprocess.Popen]:
    """``count`` processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(setting: dict[str, str], competitors: int, steps: int, warmup: int, batch: int) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("FMN_THREADS", "OMP_WAIT_POLICY")}
    env.update(setting)
    busy = start_competitors(competitors)
    try:
        time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(warmup), str(batch)], env=env, cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    finally:
        for process in busy:
            process.kill()
            process.wait()
    result = json.loads(out.strip().splitlines()[-1])
    median = statistics.median(result["step_seconds"])
    return {"threads": result["threads"], "median_step_s": median, "images_per_s": batch / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=16, help="timed steps per row (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=Path("bench/results/busy_machine.json"))
    args = parser.parse_args()

    import torch  # only for the version: the measurements run in child interpreters

    rows = []
    for competitors in args.competitors:
        for name in args.settings:
            row = measure(SETTINGS[name], competitors, args.steps, args.warmup, args.batch_size)
            rows.append({"setting": name, "competitors": competitors, **row})
            print(f"  {name:<14} {competitors} busy: {row['images_per_s']:7.1f} images/s "
                  f"({row['threads']} threads)", flush=True)
    idle = {row["setting"]: row["images_per_s"] for row in rows if row["competitors"] == 0}
    best_idle = max(idle.values()) if idle else None
    machine = f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    print(f"\nstage 1 of the cpu recipe (Lite0, 128x64, batch {args.batch_size}), on {machine}\n")
    print(f"{'setting':<14} {'busy':>4} {'threads':>7} {'images/s':>9} {'vs own idle':>12} {'vs best idle':>13}")
    for row in rows:
        own = row["images_per_s"] / idle[row["setting"]] if row["setting"] in idle else float("nan")
        best = row["images_per_s"] / best_idle if best_idle else float("nan")
        row.update(vs_own_idle=own, vs_best_idle=best)
        print(f"{row['setting']:<14} {row['competitors']:>4} {row['threads']:>7} {row['images_per_s']:>9.1f} "
              f"{own:>12.2f} {best:>13.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                                     "torch": torch.__version__, "batch_size": args.batch_size,
                                     "steps": args.steps, "rows": rows}, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
