"""How far round-off alone moves a result: the same seed trained with 1 and with 2 CPU threads.

    python -m bench.thread_stability --name cpu_synthetic                               # synthetic 'small', cpu
    python -m bench.thread_stability --name cuhk01_val --dataset cuhk01 --root /data/CUHK01/campus \\
        --reader-option validation_identities=100 --config cuhk01_cpu

The thread count changes the order of floating-point sums, so the two trainings start from the same weights and
batches and drift apart by round-off only. Both stages are trained twice through ``bench/ablation.py`` (variant
``fmn``, one seed), each in its own process with ``FMN_THREADS`` pinned; finished runs are reused. Writes the
entry ``--name`` of ``docs/results/thread_stability.json`` (and ``.md``): GRN, LAN and FMN rank-1 / mAP at 1 and 2
threads and their differences, next to the seed spread when ``--seed-study`` names an ablation JSON, and how
many queries changed their rank-1 outcome (scored from the test descriptors both runs kept): a small test split
turns a few changed queries into points.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.results_file import record_entry
from fmn_core.retrieval.descriptors import DescriptorTable
from fmn_core.retrieval.results import ROW_NAMES, evaluate_descriptors
from fmn_core.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "thread_stability.json"
ROWS = ("GRN", "LAN", "FMN")
THREADS = (1, 2)


def train(threads: int, args: argparse.Namespace, passthrough: list[str]) -> dict:
    """Both stages of one seed with ``threads`` threads (a process of its own); the validation / test scores."""
    out = args.out / args.name / f"threads{threads}"
    command = [sys.executable, "-m", "bench.ablation", *passthrough, "--seeds", str(args.seed),
               "--variants", "fmn", "--alphas", "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "FMN_THREADS": str(threads)})
    report = json.loads((out / "ablation.json").read_text())
    scores = report["per_seed"][str(args.seed)]["fmn"]["scores"]
    # the epochs' seconds of both stages, recorded by the training itself: a rerun that reuses it reports the same
    return {"scores": {row: scores[row] for row in ROWS}, "training": report["training_time"][str(args.seed)]}


def changed_queries(args: argparse.Namespace) -> dict:
    """Per row, how many queries are a rank-1 hit in one run and a miss in the other, out of how many."""
    hits = {}
    for threads in THREADS:
        kept = args.out / args.name / f"threads{threads}" / f"seed{args.seed}" / "fmn" / "test_descriptors.parquet"
        results = evaluate_descriptors(DescriptorTable.load(kept))
        hits[threads] = {row: results[row].first_match_rank == 0 for row in ROW_NAMES.values()}
    queries = len(hits[THREADS[0]]["GRN"])
    return {"queries": queries, **{row: int((hits[THREADS[0]][row] != hits[THREADS[1]][row]).sum())
                                   for row in ROWS}}


def seed_spread(path: Path | None) -> dict:
    """rank-1 / mAP std over seeds of each row, from an ablation.json (bench/ablation.py)."""
    if path is None:
        return {}
    rows = {row["row"]: row for row in json.loads(path.read_text())["rows"]}
    spread = {}
    for name in ROWS:
        row = rows.get(f"{name} (Table 1)")
        if row and len(row["rank1"]) > 1:
            import statistics

            spread[name] = {m: round(statistics.stdev(row[m]), 2) for m in ("rank1", "mAP")}
    return spread


def markdown(entries: dict) -> str:
    lines = ["| run | row | 1 thread rank-1 / mAP | 2 threads rank-1 / mAP | difference rank-1 / mAP | seed std "
             "rank-1 / mAP | queries whose rank-1 changed |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, entry in entries.items():
        for row in ROWS:
            one, two = entry["threads"]["1"]["scores"][row], entry["threads"]["2"]["scores"][row]
            spread = entry.get("seed_spread", {}).get(row)
            changed = entry.get("changed_queries")
            lines.append(f"| {name} | {row} | {one['rank1']:.2f} / {one['mAP']:.2f} | {two['rank1']:.2f} / "
                         f"{two['mAP']:.2f} | {two['rank1'] - one['rank1']:+.2f} / {two['mAP'] - one['mAP']:+.2f} | "
                         + (f"{spread['rank1']:.2f} / {spread['mAP']:.2f} |" if spread else " |")
                         + (f" {changed[row]} of {changed['queries']} |" if changed else " |"))
    machines = sorted({entry["machine"] for entry in entries.values()})
    return "\n".join(lines) + "\n\n" + "; ".join(machines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the entry of the results file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-study", type=Path, help="an ablation.json whose seed spread to show beside")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "thread_stability")
    args, passthrough = parser.parse_known_args(argv)  # the rest goes to bench/ablation.py (--dataset, --config ...)
    if os.cpu_count() is not None and os.cpu_count() < max(THREADS):
        parser.error(f"this machine has {os.cpu_count()} core(s); the comparison needs {max(THREADS)}")
    runs = {str(threads): train(threads, args, passthrough) for threads in THREADS}
    entry = {"arguments": passthrough, "seed": args.seed, "threads": runs,
             "difference": {row: {m: round(runs["2"]["scores"][row][m] - runs["1"]["scores"][row][m], 2)
                                  for m in ("rank1", "mAP")} for row in ROWS},
             "changed_queries": changed_queries(args), "seed_spread": seed_spread(args.seed_study),
             "machine": f"{cpu_model()}, {os.cpu_count()} cores",
             "command": " ".join(["python", "-m", "bench.thread_stability", *(argv or sys.argv[1:])])}
    print(record_entry(RESULTS, args.name, entry, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
