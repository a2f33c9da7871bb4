"""Why one GRN result can move by ten points with the order of floating-point sums: stage 1 epoch by epoch.

    python -m bench.grn_sensitivity --name cpu                                  # synthetic 'small', cpu recipe
    python -m bench.grn_sensitivity --name cpu_cosine --set warmup_epochs=1 --set lr_schedule=cosine

Stage 1 is trained twice from the same seed, with 1 and with 2 CPU threads. After every epoch the GRN is scored
on the test split (rank-1 / mAP of g) and the two runs' weights are compared (relative L2 distance of all
parameters). The per-epoch scores show how much the GRN's retrieval accuracy swings from one epoch to the next
under the recipe's learning rate, and the distance shows when round-off has grown into a different network.
Writes the entry ``--name`` of ``docs/results/grn_sensitivity.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from fmn_core.data import read_dataset
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.engine import load_checkpoint, load_recipe, parse_overrides, train_stage1
from fmn_core.engine.checkpoint import model_from_checkpoint
from fmn_core.retrieval import extract_descriptors
from fmn_core.retrieval.results import evaluate_descriptors
from fmn_core.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "grn_sensitivity.json"


def _grn_scores(checkpoint: Path, table) -> dict[str, float]:
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    descriptors, _ = extract_descriptors(model, table, progress=False, device="cpu")
    result = evaluate_descriptors(descriptors)["GRN"].summary()
    return {"rank1": round(float(result["rank1"]), 2), "mAP": round(float(result["mAP"]), 2)}


def _train(threads: int, config, table, work: Path) -> list[dict]:
    """Stage 1 with ``threads`` threads; after each epoch its GRN scores, and a copy of the weights kept."""
    os.environ["FMN_THREADS"] = str(threads)
    out = work / f"threads{threads}"
    rows: list[dict] = []

    def after_epoch(stage: int, epoch: int, row: dict) -> None:
        partial = out / "grn.partial.pt"
        if epoch == config.stage1_epochs:  # no partial after the last epoch: grn.pt is written instead
            return
        shutil.copyfile(partial, out / f"epoch{epoch}.pt")
        rows.append({"epoch": epoch, "lr": row["lr"], "train_acc": round(row["acc"], 4),
                     **_grn_scores(partial, table)})

    result = train_stage1(table, config, out, progress=False, on_epoch_end=after_epoch, resume=False)
    shutil.copyfile(result.checkpoint, out / f"epoch{result.epochs}.pt")
    last = result.history[-1]
    rows.append({"epoch": result.epochs, "lr": last["lr"], "train_acc": round(last["acc"], 4),
                 **_grn_scores(result.checkpoint, table)})
    return rows


def _distance(first: Path, second: Path) -> float:
    """Relative L2 distance of every floating-point tensor of two checkpoints (0: identical)."""
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    num = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a if a[k].is_floating_point())
    den = sum(float(a[k].float().pow(2).sum()) for k in a if a[k].is_floating_point())
    return round((num / den) ** 0.5, 6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=ROOT / "data" / "synthetic")
    args = parser.parse_args(argv)
    config = load_recipe(args.config, seed=args.seed, **parse_overrides(args.set))
    if not args.root.exists():
        generate_synthetic(args.root, "small")
    table = read_dataset("synthetic", args.root).table
    with tempfile.TemporaryDirectory(prefix="grn_sensitivity_") as folder:
        work = Path(folder)
        runs = {threads: _train(threads, config, table, work) for threads in (1, 2)}
        epochs = [row["epoch"] for row in runs[1]]
        rows = [{"epoch": epoch, "lr": runs[1][i]["lr"],
                 **{f"{t}t_{k}": runs[t][i][k] for t in (1, 2) for k in ("train_acc", "rank1", "mAP")},
                 "weight_distance": _distance(work / "threads1" / f"epoch{epoch}.pt",
                                              work / "threads2" / f"epoch{epoch}.pt")}
                for i, epoch in enumerate(epochs)]
    entries = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    entries[args.name] = {"config": args.config, "overrides": args.set, "seed": args.seed, "rows": rows,
                          "machine": f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}",
                          "command": " ".join(["python", "-m", "bench.grn_sensitivity", *(argv or sys.argv[1:])])}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(entries, indent=1))
    lines = []
    for name, entry in entries.items():
        lines += [f"**{name}** (`{entry['config']}` {' '.join(entry['overrides'])}, seed {entry['seed']}; "
                  f"{entry['machine']})", "", "| epoch | lr | 1 thread: train acc, GRN rank-1 / mAP | 2 threads: "
                  "train acc, GRN rank-1 / mAP | weight distance |", "|---:|---:|---|---|---:|"]
        lines += [f"| {r['epoch']} | {r['lr']:.4g} | {r['1t_train_acc']:.3f}, {r['1t_rank1']:.2f} / {r['1t_mAP']:.2f} "
                  f"| {r['2t_train_acc']:.3f}, {r['2t_rank1']:.2f} / {r['2t_mAP']:.2f} | {r['weight_distance']:.4g} |"
                  for r in entry["rows"]]
        lines.append("")
    RESULTS.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
