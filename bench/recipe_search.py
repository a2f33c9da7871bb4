"""The search for a real-data CPU recipe, on validation identities only: every configuration tried, its score, its time.

    python -m bench.recipe_search --cuhk01 /data/CUHK01/campus                 # every candidate, CUHK01 validation
    python -m bench.recipe_search --cuhk01 ... --only bot_sgd_160 cpu          # some of them
    python -m bench.recipe_search --synthetic --only cpu bot_sgd_160           # the synthetic check (seed-1 data)

CUHK01: the fixed split's 485 training identities, of which the last ``--validation-identities`` (100) are
held out as query (camera A) and gallery (camera B); the other 385 train. The 486 test identities are never
read. Synthetic: the ``small`` preset generated with generator seed 1, a population of people the default
dataset (seed 0) does not hold, scored on its own query/gallery split.

Each candidate is a ``cpu``-based recipe with some fields changed (:data:`CANDIDATES`, the record of everything
tried, kept when a candidate loses); both stages are trained with training seed 0 through ``bench/ablation.py``
(variant ``fmn``), so a run reuses what an interrupted one finished. Writes
``docs/results/recipe_search_<dataset>.json`` and ``.md``: validation rank-1 / mAP of the GRN, LAN and FMN, and
each stage's training time on this machine. Pin the thread count (``FMN_THREADS=2``) so that another process on
the machine cannot change the numerics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bench import ablation
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.data.synthetic.config import resolve_config
from fmn_core.engine import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"

#: Bag-of-tricks settings shared by the candidates that use them (fast-reid / torchreid defaults, scaled to 2 cores).
BOT = {"bn_neck": True, "label_smoothing": 0.1, "random_erasing": 0.5, "triplet_weight": 1.0,
       "triplet_margin": 0.3, "instances_per_identity": 4, "warmup_epochs": 2, "lr_schedule": "cosine"}

#: name -> (what it tests, fields changed from the ``cpu`` recipe). Every configuration tried stays here.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "cpu": ("the CPU demo recipe as it is (8 + 8 epochs, 128x64)", {}),
    "cpu_20": ("the CPU demo recipe for 20 + 20 epochs: what longer training alone gives",
               {"stage1_epochs": 20, "stage1_lr_drop_epoch": 15, "stage2_epochs": 20, "stage2_lr_drop_epoch": 15}),
    "bot_sgd_128": ("bag of tricks, SGD 0.05, 20 + 20 epochs, 128x64",
                    {**BOT, "stage1_epochs": 20, "stage2_epochs": 20}),
    "bot_adamw_128": ("bag of tricks, AdamW 5e-4, 20 + 20 epochs, 128x64",
                      {**BOT, "stage1_epochs": 20, "stage2_epochs": 20, "optimizer": "adamw", "stage1_lr": 5e-4,
                       "stage2_lr": 5e-4}),
    "bot_sgd_160": ("bag of tricks, SGD 0.05, 20 + 20 epochs, 160x64 (CUHK01's own 160x60 shape)",
                    {**BOT, "stage1_epochs": 20, "stage2_epochs": 20, "input_height": 160, "input_width": 64}),
    "bot_sgd_160_e30": ("bag of tricks, SGD 0.05, 30 + 30 epochs, 160x64: what longer training adds",
                        {**BOT, "stage1_epochs": 30, "stage2_epochs": 30, "input_height": 160, "input_width": 64}),
    "bot_sgd_160_lite2": ("bag of tricks, SGD 0.05, 20 + 20 epochs, 160x64, EfficientNet-Lite2",
                          {**BOT, "stage1_epochs": 20, "stage2_epochs": 20, "input_height": 160, "input_width": 64,
                           "arch": "efficientnet_lite2"}),
}


def _log(message: str) -> None:
    print(f"[recipe_search {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_candidate(name: str, dataset_args: list[str], out: Path) -> dict:
    """Train one candidate (seed 0, both stages) and score it on the validation query/gallery."""
    note, changes = CANDIDATES[name]
    sets = [f"{key}={value}" for key, value in changes.items()]
    config = load_recipe("cpu", **changes)  # refuses a candidate that is not a valid recipe before any training
    run = out / name
    ablation.main([*dataset_args, "--config", "cpu", *[a for s in sets for a in ("--set", s)], "--seeds", "0",
                   "--variants", "fmn", "--alphas", "--out", str(run)])
    scores = json.loads((run / "ablation.json").read_text())["per_seed"]["0"]["fmn"]["scores"]
    (stage1, images1), (stage2, images2) = (ablation.stage_seconds(run / "seed0" / name) for name in ("grn", "fmn"))
    stage1, stage2 = round(stage1, 1), round(stage2, 1)
    return {"name": name, "note": note, "changes": changes, "config": config.to_dict(),
            "scores": {row: scores[row] for row in ("GRN", "LAN", "FMN", "FMN + re-ranking") if row in scores},
            "stage1_seconds": stage1, "stage2_seconds": stage2, "train_minutes": round((stage1 + stage2) / 60, 1),
            "images_per_second": round((images1 + images2) / (stage1 + stage2), 1) if stage1 + stage2 else 0.0}


def markdown(dataset: str, rows: list[dict], machine: str) -> str:
    lines = [f"Recipe search on {dataset} validation identities (training seed 0); {machine}.", "",
             "| candidate | GRN rank-1 / mAP | LAN rank-1 / mAP | FMN rank-1 / mAP | FMN + re-ranking | training "
             "(min) | images/s | what it tests |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        cells = [f"{row['scores'][k]['rank1']:.2f} / {row['scores'][k]['mAP']:.2f}" if k in row["scores"] else ""
                 for k in ("GRN", "LAN", "FMN", "FMN + re-ranking")]
        lines.append(f"| `{row['name']}` | {' | '.join(cells)} | {row['train_minutes']} | "
                     f"{row['images_per_second']} | {row['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cuhk01", type=Path, help="the CUHK01 campus folder")
    where.add_argument("--synthetic", action="store_true", help="the synthetic check (small preset, generator seed 1)")
    parser.add_argument("--validation-identities", type=int, default=100)
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="candidates to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recipe_search")
    args = parser.parse_args(argv)

    if args.cuhk01:
        dataset = "cuhk01"
        dataset_args = ["--dataset", "cuhk01", "--root", str(args.cuhk01), "--reader-option",
                        f"validation_identities={args.validation_identities}"]
    else:
        dataset = "synthetic"
        root = args.out / "synthetic_seed1"
        generate_synthetic(root, dataclasses.replace(resolve_config("small"), seed=1), workers=1)
        dataset_args = ["--dataset", "synthetic", "--root", str(root)]
    out = args.out / dataset
    report = RESULTS / f"recipe_search_{dataset}.json"
    rows = {row["name"]: row for row in json.loads(report.read_text())["rows"]} if report.is_file() else {}
    machine = ablation.machine()
    for name in args.only or list(CANDIDATES):
        _log(f"{dataset}: {name} ({CANDIDATES[name][0]})")
        rows[name] = {**run_candidate(name, dataset_args, out), "machine": machine}
        ordered = [rows[n] for n in CANDIDATES if n in rows]
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = markdown(dataset, ordered, machine)
        command = " ".join(["python", "-m", "bench.recipe_search", *(argv if argv is not None else sys.argv[1:])])
        report.write_text(json.dumps({"dataset": dataset, "validation_identities": args.validation_identities
                                      if args.cuhk01 else None, "command": command, "rows": ordered}, indent=1))
        report.with_suffix(".md").write_text(text)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
