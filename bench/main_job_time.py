"""How long a new user waits: `python3 run.py main` in a fresh clone, creating `.venv/` included.

    python -m bench.main_job_time                 # clones this repository into a temporary folder and runs it there

Two timed steps, as the quick start runs them: creating `.venv/` from `requirements.lock` (the first run only) and
the main job itself (the synthetic data generated, both stages trained, descriptors, evaluation, ONNX, model card,
the promotion gate, DVC). Writes ``docs/results/main_job_time.json``: the machine, both times, the Table 1 the
job printed and the command. Run it on an otherwise idle machine: training takes the cores that are free.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmn_core.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "main_job_time.json"


def _timed(command: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=4 * 3600,
                              env={k: v for k, v in os.environ.items() if not k.startswith(("FMN_", "DAGSTER_"))})
    seconds = time.perf_counter() - started
    text = log.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); its output: {log}\n{text[-3000:]}")
    return seconds, text


def memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="fmn-fresh-"))
    clone = folder / "fmn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    try:
        venv_seconds, _ = _timed([sys.executable, "-c", "import run; run.ensure_environment()"], clone,
                                 folder / "venv.log")
        main_seconds, output = _timed([sys.executable, "run.py", "main"], clone, folder / "main.log")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    table = [line for line in output.splitlines() if re.match(r"^\| (GRN|LAN|FMN)", line)]
    decision = next((line.strip() for line in output.splitlines() if line.startswith("deployed model:")), "")
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb()},
              "commit": commit, "venv_seconds": round(venv_seconds, 1), "main_job_seconds": round(main_seconds, 1),
              "total_minutes": round((venv_seconds + main_seconds) / 60, 1), "table_1": table,
              "deployment": decision, "command": "python -m bench.main_job_time",
              "when": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"| step | seconds |\n|---|---:|\n| create .venv/ | {venv_seconds:.0f} |\n| python3 run.py main | "
          f"{main_seconds:.0f} |\n\n{cpu_model()}, {os.cpu_count()} cores, {memory_gb()} GB; written to {RESULTS}")
    print("\n".join(table))
    if args.keep:
        print(f"clone kept at {clone}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
