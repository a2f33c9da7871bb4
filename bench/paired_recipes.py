"""Two recipes' seed studies compared seed by seed: which one trains the better GRN, LAN and FMN.

    python -m bench.paired_recipes --name cpu_schedule \\
        --baseline bench/results/thread_stability/cpu_synthetic_small/threads2/ablation.json \\
        --candidate bench/results/thread_stability/cpu_warmup_cosine_synthetic_small/threads2/ablation.json

Each argument is an ``ablation.json`` written by ``python -m bench.ablation --variants fmn`` on one dataset with
one seed list. A seed fixes the data order and the initialisation in both recipes, so the per-seed difference
removes most of the seed-to-seed spread; the table gives both recipes' mean ± std and the candidate minus the
baseline as mean ± standard error over the shared seeds. Writes the entry ``--name`` of
``docs/results/paired_recipes.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from bench.results_file import record_entry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "paired_recipes.json"
ROWS = ("GRN", "LAN", "FMN")
METRICS = ("rank1", "mAP")


def _scores(path: Path) -> tuple[dict[str, dict], dict]:
    """Per seed the ``fmn`` run's GRN / LAN / FMN scores, and the report's description (config, machine)."""
    report = json.loads(path.read_text())
    per_seed = {seed: runs["fmn"]["scores"] for seed, runs in report["per_seed"].items() if "fmn" in runs}
    if not per_seed:
        raise SystemExit(f"{path}: no finished 'fmn' run (expected an ablation.json of bench/ablation.py)")
    return per_seed, {key: report.get(key) for key in ("dataset", "preset", "overrides", "machine")}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 2),
            "std": round(statistics.stdev(values), 2) if len(values) > 1 else math.nan}


def compare(baseline: Path, candidate: Path) -> dict:
    """Both recipes' means and the paired differences over the seeds both finished."""
    base, base_info = _scores(baseline)
    cand, cand_info = _scores(candidate)
    if base_info["dataset"] != cand_info["dataset"]:
        raise SystemExit(f"the two studies used different data ({base_info['dataset']} and {cand_info['dataset']}): "
                         "a paired difference needs the same test split")
    seeds = sorted(set(base) & set(cand), key=int)
    if len(seeds) < 2:
        raise SystemExit(f"paired differences need at least two shared seeds; shared: {seeds}")
    rows = {}
    for row in ROWS:
        rows[row] = {}
        for metric in METRICS:
            differences = [cand[s][row][metric] - base[s][row][metric] for s in seeds]
            rows[row][metric] = {
                "baseline": _mean_std([base[s][row][metric] for s in seeds]),
                "candidate": _mean_std([cand[s][row][metric] for s in seeds]),
                "difference": round(statistics.fmean(differences), 2),
                "standard_error": round(statistics.stdev(differences) / math.sqrt(len(seeds)), 2),
                "per_seed": [round(d, 2) for d in differences]}
    return {"seeds": [int(s) for s in seeds], "rows": rows, "baseline": {"file": str(baseline), **base_info},
            "candidate": {"file": str(candidate), **cand_info}}


def markdown(entries: dict) -> str:
    lines = ["| comparison | row | baseline rank-1 / mAP | candidate rank-1 / mAP | candidate minus baseline rank-1 "
             "/ mAP (± s.e.) | per seed rank-1 |", "|---|---|---:|---:|---:|---|"]
    for name, entry in entries.items():
        for row, metrics in entry["rows"].items():
            r, m = metrics["rank1"], metrics["mAP"]
            lines.append(f"| {name} | {row} | {r['baseline']['mean']:.2f} ± {r['baseline']['std']:.2f} / "
                         f"{m['baseline']['mean']:.2f} ± {m['baseline']['std']:.2f} | {r['candidate']['mean']:.2f} ± "
                         f"{r['candidate']['std']:.2f} / {m['candidate']['mean']:.2f} ± {m['candidate']['std']:.2f} | "
                         f"{r['difference']:+.2f} ± {r['standard_error']:.2f} / {m['difference']:+.2f} ± "
                         f"{m['standard_error']:.2f} | {', '.join(f'{d:+.2f}' for d in r['per_seed'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the entry of the results file")
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline recipe's ablation.json")
    parser.add_argument("--candidate", type=Path, required=True, help="the candidate recipe's ablation.json")
    args = parser.parse_args(argv)
    entry = compare(args.baseline, args.candidate)
    entry["command"] = " ".join(["python", "-m", "bench.paired_recipes", *(argv or sys.argv[1:])])
    print(record_entry(RESULTS, args.name, entry, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
