"""Where one training step of the ``cpu`` recipe spends its time, per layer type.

    python -m bench.profile_step                  # stage 1 and stage 2, torch's threads
    python -m bench.profile_step --threads 1 --onednn

Runs real steps of both stages (EfficientNet-Lite0, 128x64, batch 32, channels_last: stage 1 is
the GRN forward/backward with cross-entropy, stage 2 the frozen GRN's forward plus MN and LAN
forward/backward with cross-entropy and the ranking loss; SGD as the trainer sets it up) under the
torch profiler, and sorts each operator's *self* time into layer types. Convolutions are told
apart by their weight's shape (``groups == channels``: depthwise; 1x1: pointwise; the 3x3 stem:
full). The batch gather (flip, crop, normalise from the uint8 cache) is timed too, since it runs
on the same cores between steps.

``--onednn`` runs one more step with ``ONEDNN_VERBOSE=1`` in a child interpreter and sums the
oneDNN primitive times per (primitive kind, implementation / ISA), which shows which kernels the
convolutions actually use on this CPU.

Prints tables and writes JSON (``bench/results/profile_step.json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fmn_core.data.loading import CachedBatches, ImageCache
from fmn_core.engine import preset
from fmn_core.engine.checkpoint import build_model
from fmn_core.losses import identity_loss, ranking_loss
from fmn_core.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

IDENTITIES = 485  # CUHK01's training identities in the project's split




def conv_kind(weight_shape: list[int] | None) -> str:
    """Depthwise, pointwise or full convolution, from the weight's (out, in/groups, kh, kw) shape."""
    if not weight_shape or len(weight_shape) != 4:
        return "conv (shape unknown)"
    _, per_group, kh, kw = weight_shape
    if per_group == 1 and kh > 1:
        return "depthwise conv"
    if kh == 1 and kw == 1:
        return "pointwise (1x1) conv"
    return "full conv (stem)"


def layer_type(name: str, shapes: list) -> str:
    """The layer type an operator's self time belongs to."""
    backward = "backward" in name or name.startswith("autograd::") or "Backward" in name
    if "convolution" in name or "conv2d" in name or "mkldnn_conv" in name or "depthwise" in name:
        weight = shapes[2] if "backward" in name and len(shapes) > 2 else (shapes[1] if len(shapes) > 1 else None)
        return f"{conv_kind(weight)} {'backward' if 'backward' in name else 'forward'}"
    if "batch_norm" in name or "native_batch_norm" in name:
        return f"batch norm {'backward' if backward else 'forward'}"
    if "hardtanh" in name or "relu" in name or "clamp" in name:
        return f"activation {'backward' if backward else 'forward'}"
    if name in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm", "aten::t"):
        return "linear (FC, MN)"
    if "sgd" in name.lower() or "_foreach" in name:
        return "optimizer (SGD)"
    if "log_softmax" in name or "nll_loss" in name or "cross_entropy" in name:
        return "loss"
    if "adaptive_avg_pool" in name or "mean" in name or "avg_pool" in name:
        return "pooling"
    if name in ("aten::mul", "aten::add", "aten::add_", "aten::mul_", "aten::sigmoid", "aten::sigmoid_backward",
                "aten::div", "aten::sub", "aten::exp", "aten::sum", "aten::cat"):
        return "elementwise (masking, residuals, ranking loss)"
    if name in ("aten::copy_", "aten::contiguous", "aten::clone", "aten::empty", "aten::empty_like",
                "aten::zero_", "aten::fill_", "aten::to", "aten::_to_copy", "aten::as_strided", "aten::zeros"):
        return "copies and allocation"
    return "other"


def build(stage: int, batch: int):
    """The model, optimizer, step function and an in-memory batch source for ``stage``."""
    config = preset("cpu", pretrained="none", batch_size=batch)
    torch.manual_seed(0)
    model = build_model(config, IDENTITIES)
    if stage == 1:
        for module in model.local_modules():
            module.requires_grad_(False)
    else:
        model.freeze_grn()
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=5e-4)
    count = batch * 8
    images = torch.randint(0, 256, (count, 3, *config.input_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    cache = ImageCache(images, [f"random/{i}.jpg" for i in range(count)])
    batches = CachedBatches(cache, [i % IDENTITIES for i in range(count)], batch, pad=config.crop_pad,
                            channels_last=True)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        if stage == 1:
            loss = identity_loss(model(images, branch="grn").grn_logits, labels)
        else:
            out = model(images, branch="all")
            loss = (identity_loss(out.lan_logits, labels)
                    + config.rank_weight * ranking_loss(out.grn_logits, out.lan_logits, labels, config.margin))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batches


def profile_stage(stage: int, batch: int, steps: int, warmup: int) -> dict:
    """Median step time, gather time, and per-layer-type self time per step."""
    step, batches = build(stage, batch)
    iterator = iter(batches)

    def next_batch():
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(batches)
            return next(iterator)

    for _ in range(warmup):
        step(*next_batch())
    step_times, gather_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        images, labels = next_batch()
        gathered = time.perf_counter()
        step(images, labels)
        step_times.append(time.perf_counter() - gathered)
        gather_times.append(gathered - start)
    profiled = 3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(profiled):
            step(*next_batch())
    per_type: dict[str, float] = collections.defaultdict(float)
    per_op: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        self_us = event.self_cpu_time_total
        if self_us <= 0:
            continue
        per_type[layer_type(event.name, event.input_shapes or [])] += self_us / profiled / 1e3
        per_op[event.name] += self_us / profiled / 1e3
    return {
        "stage": stage,
        "median_step_ms": statistics.median(step_times) * 1e3,
        "median_gather_ms": statistics.median(gather_times) * 1e3,
        "images_per_s": batch / (statistics.median(step_times) + statistics.median(gather_times)),
        "profiled_ms_per_step": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "top_ops_ms_per_step": dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:15]),
    }


#: Run with the repository root as the working directory, where ``-c`` finds the bench package (sys.path[0] is
#: the working directory), as ``python -m bench.profile_step`` does.
ONEDNN_CHILD = r"""
import sys
from bench.profile_step import build
step, batches = build(int(sys.argv[1]), int(sys.argv[2]))
it = iter(batches)
for _ in range(3):
    step(*next(it))
print("=== measured step ===", flush=True)
step(*next(it))
"""


def onednn_summary(stage: int, batch: int, threads: int | None) -> dict:
    """oneDNN primitive time of one step, per primitive kind and implementation, from ONEDNN_VERBOSE."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", ONEDNN_CHILD, str(stage), str(batch)], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    measured = out.split("=== measured step ===", 1)[-1]
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    isa = ""
    for line in out.splitlines():
        if ",info,cpu,isa:" in line:
            isa = line.split("isa:", 1)[1]
    for line in measured.splitlines():
        parts = line.split(",")
        if parts[0] not in ("onednn_verbose", "dnnl_verbose") or "exec" not in parts[:4]:
            continue
        # onednn_verbose[,v1][,primitive],exec,cpu,<primitive>,<implementation>,<prop_kind>,...,<ms>
        at = parts.index("exec")
        try:
            ms = float(parts[-1])
            primitive, implementation, prop = parts[at + 2], parts[at + 3], parts[at + 4]
        except (ValueError, IndexError):
            continue
        key = f"{primitive} {prop} [{implementation}]"
        totals[key] += ms
        counts[key] += 1
    rows = [{"primitive": key, "calls": counts[key], "ms": ms} for key, ms in
            sorted(totals.items(), key=lambda kv: -kv[1])]
    return {"isa": isa, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--onednn", action="store_true", help="also sum ONEDNN_VERBOSE primitive times")
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/profile_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}")
    results = {"machine": machine, "batch_size": args.batch_size, "stages": []}
    for stage in args.stages:
        result = profile_stage(stage, args.batch_size, args.steps, args.warmup)
        if args.onednn:
            result["onednn"] = onednn_summary(stage, args.batch_size, args.threads)
        results["stages"].append(result)
        print(f"\nstage {stage}, cpu recipe, batch {args.batch_size}, on {machine}")
        print(f"  step {result['median_step_ms']:.1f} ms + gather {result['median_gather_ms']:.1f} ms "
              f"= {result['images_per_s']:.1f} images/s (median of {args.steps})")
        total = sum(result["profiled_ms_per_step"].values())
        # the profiler's own overhead inflates every operator; shares scaled to the unprofiled step are comparable
        result["estimated_ms_per_step"] = {name: ms / total * result["median_step_ms"]
                                           for name, ms in result["profiled_ms_per_step"].items()}
        print(f"  {'layer type':<52} {'profiled':>8} {'share':>6} {'~ms of step':>11}")
        for name, ms in result["profiled_ms_per_step"].items():
            print(f"  {name:<52} {ms:>8.1f} {ms / total:>6.1%} {result['estimated_ms_per_step'][name]:>11.1f}")
        if args.onednn:
            print(f"  oneDNN ({result['onednn']['isa'] or 'ISA not reported'}): primitive time of one step")
            for row in result["onednn"]["rows"][:14]:
                print(f"    {row['primitive']:<70} {row['calls']:>4} calls {row['ms']:>8.1f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
