"""Ablations of the paper, each row mean ± std over training seeds, on any dataset the readers take.

    python -m bench.ablation                                   # synthetic 'small', cpu recipe, seeds 0 1 2
    python -m bench.ablation --dataset custom --root /data/two_cams/manifest.csv --seeds 0 1 2
    python -m bench.ablation --variants fmn constant_mask --seeds 0      # a subset

Per seed, one GRN (stage 1) is trained and shared by every stage-2 variant:

* ``fmn``: the recipe as configured -> Table 1's rows GRN, LAN, FMN, FMN + re-ranking, and eq. (6)'s
  alpha at 0.3 / 0.5 / 0.7 (from the same descriptors);
* ``no_rank``: the ranking loss (eq. 5) off;
* ``lan_from_grn``: the LAN starts from the fine-tuned GRN instead of theta_o;
* ``constant_mask``: mask = 1 everywhere, a second network without the Mixing Network, the control that
  shows what the MN itself adds;
* ``mask_<layer>``: Table 5, the mask on another layer (``--masked-layers``);
* ``grn_long``: a GRN trained for as many epochs as both stages together (the compute-matched control).

Finished runs are reused (delete ``--out`` to start over), so an interrupted sweep continues where it
stopped. Writes ``ablation.md`` and ``ablation.json`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fmn_core.data import read_dataset
from fmn_core.data.loading import ImageCache
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.engine import TrainConfig, load_recipe, parse_overrides, train_stage1, train_stage2
from fmn_core.engine.recipes import recipe_changes
from fmn_core.retrieval import DescriptorTable, extract_descriptors
from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE
from fmn_core.retrieval.results import evaluate_descriptors, format_mean_std, mean_std
from fmn_core.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
#: The stage-2 rows: ``fmn`` is the recipe itself; every other row is the change its recipe file
#: ``fmn_core/configs/ablation/<row>.yaml`` makes (applied to whichever recipe ``--preset`` names).
STAGE2_VARIANTS: dict[str, dict] = {
    "fmn": {},
    **{name: recipe_changes(f"ablation/{name}") for name in ("no_rank", "lan_from_grn", "constant_mask")},
}
METRICS = ("rank1", "mAP")


def _log(message: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _scores(results: dict) -> dict[str, dict[str, float]]:
    return {name: {k: round(float(v), 4) for k, v in result.summary().items()} for name, result in results.items()}


def _with_alpha(table: DescriptorTable, alpha: float) -> DescriptorTable:
    """Eq. (6) at another alpha, from the stored unit-length g and l."""
    fmn = np.concatenate([alpha * table.features["grn"], (1 - alpha) * table.features["lan"]], axis=1)
    return DescriptorTable(table.meta, {"fmn": fmn}, alpha)


def parse_rerank(text: str) -> tuple[int, int, float]:
    """``"k1,k2,lambda"`` -> (k1, k2, lambda)."""
    try:
        k1, k2, lambda_value = text.split(",")
        return int(k1), int(k2), float(lambda_value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k1,k2,lambda such as {K1},{K2},{LAMBDA_VALUE}, "
                                         f"got {text!r}") from None


def rerank_row(params: tuple[int, int, float]) -> str:
    return "FMN + re-ranking (k1={}, k2={}, lambda={})".format(*params)


def _evaluate(checkpoint: Path, table, cache: ImageCache, rerank: bool, alphas: list[float],
              rerank_grid: tuple[tuple[int, int, float], ...] = (), keep: Path | None = None) -> dict:
    descriptors, _ = extract_descriptors(checkpoint, table, cache=cache, progress=False, device="cpu")
    if keep is not None:  # g and l of every test image, so later analyses need no retraining
        descriptors.save(keep)
    rows = _scores(evaluate_descriptors(descriptors, rerank=rerank))
    for alpha in alphas:
        rows[f"FMN alpha={alpha}"] = _scores(evaluate_descriptors(_with_alpha(descriptors, alpha)))["FMN"]
    for k1, k2, lambda_value in rerank_grid:
        scored = evaluate_descriptors(descriptors, rerank=True, k1=k1, k2=k2, lambda_value=lambda_value)
        rows[rerank_row((k1, k2, lambda_value))] = _scores(scored)["FMN + re-ranking"]
    return rows


def _grn_only(checkpoint: Path, table, cache: ImageCache, config: TrainConfig, out: Path) -> dict:
    """A GRN checkpoint has no LAN: score its g through a stage-2 wrapper with zero LAN epochs."""
    wrapped = train_stage2(table, config.replace(stage2_epochs=0), checkpoint, out, progress=False)
    return {"GRN": _evaluate(wrapped.checkpoint, table, cache, False, [])["GRN"]}


def run_seed(seed: int, args: argparse.Namespace, table, train_cache: ImageCache, test_cache: ImageCache,
             base: TrainConfig) -> dict[str, dict]:
    out = Path(args.out) / f"seed{seed}"
    config = base.replace(seed=seed)
    results: dict[str, dict] = {}

    def cached(name: str, produce) -> dict:
        file = out / name / "result.json"
        if file.is_file():
            return json.loads(file.read_text())
        start = time.perf_counter()
        value = produce(out / name)
        value["seconds"] = round(time.perf_counter() - start, 1)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(value, indent=1))
        return value

    def grn(folder: Path) -> dict:
        result = train_stage1(table, config, folder, progress=False, cache=train_cache)
        return {"history": result.history}

    _log(f"seed {seed}: GRN ({config.stage1_epochs} epochs)")
    cached("grn", grn)
    grn_file = out / "grn" / "grn.pt"
    variants = {**STAGE2_VARIANTS, **{f"mask_{layer}": {"masked_layer": layer} for layer in args.masked_layers}}
    for name, overrides in variants.items():
        if name not in args.variants and not (name.startswith("mask_") and "mask_layers" in args.variants):
            continue

        def stage2(folder: Path, overrides=overrides, name=name) -> dict:
            result = train_stage2(table, config.replace(**overrides), grn_file, folder, progress=False,
                                  cache=train_cache)
            scores = _evaluate(result.checkpoint, table, test_cache, rerank=name == "fmn",
                               alphas=args.alphas if name == "fmn" else [],
                               rerank_grid=tuple(args.rerank) if name == "fmn" else (),
                               keep=folder / "test_descriptors.parquet")
            return {"scores": scores, "mask": result.diagnostics, "history": result.history}

        _log(f"seed {seed}: stage 2 '{name}' {overrides or ''}")
        results[name] = cached(name, stage2)
    if "grn_long" in args.variants:
        long_epochs = config.stage1_epochs + config.stage2_epochs
        long_config = config.replace(stage1_epochs=long_epochs,
                                     stage1_lr_drop_epoch=round(config.stage1_lr_drop_epoch * long_epochs
                                                                / max(config.stage1_epochs, 1)))

        def grn_long(folder: Path) -> dict:
            result = train_stage1(table, long_config, folder, progress=False, cache=train_cache)
            return {"scores": _grn_only(result.checkpoint, table, test_cache, long_config, folder / "eval"),
                    "history": result.history}

        _log(f"seed {seed}: compute-matched GRN ({long_epochs} epochs)")
        results["grn_long"] = cached("grn_long", grn_long)
    return results


def add_rerank_rows(folder: Path, result: dict, grid: tuple[tuple[int, int, float], ...]) -> dict:
    """Re-ranking settings asked for after a run finished, scored from the test descriptors it kept (no training)."""
    missing = [params for params in grid if rerank_row(params) not in result.get("scores", {})]
    kept = folder / "test_descriptors.parquet"
    if not missing or not kept.is_file():
        return result
    descriptors = DescriptorTable.load(kept)
    for k1, k2, lambda_value in missing:
        scored = evaluate_descriptors(descriptors, rerank=True, k1=k1, k2=k2, lambda_value=lambda_value)
        result["scores"][rerank_row((k1, k2, lambda_value))] = _scores(scored)["FMN + re-ranking"]
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def finished_runs(out: Path, seed: int) -> dict[str, dict]:
    """The scored runs of one seed that an earlier (possibly interrupted) sweep left under ``out``."""
    runs = {}
    for file in sorted((out / f"seed{seed}").glob("*/result.json")):
        result = json.loads(file.read_text())
        if "scores" in result:
            runs[file.parent.name] = result
    return runs


#: (label of the table row, variant, score row)
TABLE_ROWS = [
    ("GRN (Table 1)", "fmn", "GRN"),
    ("LAN (Table 1)", "fmn", "LAN"),
    ("FMN (Table 1)", "fmn", "FMN"),
    ("FMN + re-ranking (Table 1)", "fmn", "FMN + re-ranking"),
    ("FMN, alpha = 0.3", "fmn", "FMN alpha=0.3"),
    ("FMN, alpha = 0.7", "fmn", "FMN alpha=0.7"),
    ("FMN, ranking loss off", "no_rank", "FMN"),
    ("LAN, ranking loss off", "no_rank", "LAN"),
    ("FMN, LAN from the fine-tuned GRN", "lan_from_grn", "FMN"),
    ("LAN, LAN from the fine-tuned GRN", "lan_from_grn", "LAN"),
    ("FMN, constant mask (no MN)", "constant_mask", "FMN"),
    ("LAN, constant mask (no MN)", "constant_mask", "LAN"),
    ("GRN, compute-matched (both stages' epochs)", "grn_long", "GRN"),
]


#: (label, variant, other variant, score row): per-seed paired differences, variant minus other, on the same GRN
PAIRED_ROWS = [
    ("LAN: learned mask minus constant mask", "fmn", "constant_mask", "LAN"),
    ("FMN: learned mask minus constant mask", "fmn", "constant_mask", "FMN"),
    ("FMN minus GRN (same seed)", "fmn", "fmn", ("FMN", "GRN")),
    ("FMN minus compute-matched GRN", "fmn", "grn_long", ("FMN", "GRN")),
]


def paired_differences(per_seed: dict[int, dict]) -> tuple[list[dict], str]:
    """Per-seed differences with their mean, std and standard error (std / sqrt(seeds)): the paired comparison
    removes the seed's shared GRN from the noise."""
    table, lines = [], ["| difference (points) | rank-1 | mAP | seeds | per seed (rank-1 / mAP) |",
                        "|---|---:|---:|---:|---|"]
    for label, variant, other, score_row in PAIRED_ROWS:
        mine, theirs = score_row if isinstance(score_row, tuple) else (score_row, score_row)
        diffs = {m: [] for m in METRICS}
        seeds = []
        for seed, results in per_seed.items():
            try:
                a, b = results[variant]["scores"][mine], results[other]["scores"][theirs]
            except KeyError:
                continue
            seeds.append(seed)
            for m in METRICS:
                diffs[m].append(a[m] - b[m])
        if not seeds:
            continue
        cells = []
        for m in METRICS:
            mean, std = mean_std(diffs[m])
            error = f"{std / len(seeds) ** 0.5:.2f}" if len(seeds) > 1 else "n/a (one seed)"
            cells.append(f"{mean:+.2f} ± {error}")
        per = ", ".join(f"{r:+.2f} / {a:+.2f}" for r, a in zip(diffs["rank1"], diffs["mAP"], strict=True))
        table.append({"row": label, "seeds": seeds, **{m: diffs[m] for m in METRICS}})
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {len(seeds)} | {per} |")
    return table, "\n".join(lines) + "\n\nmean ± standard error over seeds"


def summarise(per_seed: dict[int, dict], masked_layers: list[str],
              rerank_grid: tuple[tuple[int, int, float], ...] = ()) -> tuple[list[dict], str]:
    rows = list(TABLE_ROWS) + [(f"FMN, mask on {layer} (Table 5)", f"mask_{layer}", "FMN") for layer in masked_layers]
    rows += [(rerank_row(params), "fmn", rerank_row(params)) for params in rerank_grid]
    table, lines = [], ["| row | rank-1 | mAP | mask variation | seeds |", "|---|---:|---:|---:|---:|"]
    for label, variant, score_row in rows:
        found = [seed_results[variant] for seed_results in per_seed.values() if variant in seed_results]
        found = [f for f in found if score_row in f.get("scores", {})]
        if not found:
            continue
        values = {m: [f["scores"][score_row][m] for f in found] for m in METRICS}
        variation = [f["mask"]["variation_across_images"] for f in found if f.get("mask")]
        entry = {"row": label, "variant": variant, "score_row": score_row, "seeds": len(found),
                 **{m: values[m] for m in METRICS}, "mask_variation": variation}
        table.append(entry)
        shown_variation = format_mean_std(variation) if variation and score_row.startswith("FMN") else ""
        rank1, mean_ap = format_mean_std(values["rank1"]), format_mean_std(values["mAP"])
        lines.append(f"| {label} | {rank1} | {mean_ap} | {shown_variation} | {len(found)} |")
    return table, "\n".join(lines)


def stage_seconds(run: Path) -> tuple[float, int]:
    """Training seconds (the epochs only) and images of one finished stage, from its ``result.json`` history."""
    history = json.loads((run / "result.json").read_text()).get("history", [])
    return sum(row["seconds"] for row in history), sum(row["images"] for row in history)


def training_time(out: Path, seeds: list[int]) -> tuple[dict[str, dict], str]:
    """Per seed, the epochs' seconds of the recipe's two stages (the shared GRN and the ``fmn`` row; image decoding
    and evaluation excluded): what a user of the recipe waits for its training."""
    per_seed: dict[str, dict] = {}
    for seed in seeds:
        folders = [out / f"seed{seed}" / name for name in ("grn", "fmn")]
        if not all((folder / "result.json").is_file() for folder in folders):
            continue
        (stage1, _), (stage2, _) = (stage_seconds(folder) for folder in folders)
        per_seed[str(seed)] = {"stage1_seconds": round(stage1, 1), "stage2_seconds": round(stage2, 1),
                               "minutes": round((stage1 + stage2) / 60, 2)}
    if not per_seed:
        return {}, ""
    minutes = [run["minutes"] for run in per_seed.values()]
    return per_seed, (f"Training time of both stages (the epochs, per seed): {format_mean_std(minutes)} min "
                      f"({', '.join(f'{m:.1f}' for m in minutes)}).")


def machine() -> str:
    """The machine a figure was measured on, as the docs name it: CPU model (family / model), cores, torch."""
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="reader name (synthetic, market1501, custom, ...)")
    parser.add_argument("--root", default=None, help="dataset root; synthetic: generated here if absent")
    parser.add_argument("--synthetic-preset", default="small")
    parser.add_argument("--preset", "--config", dest="preset", default="cpu",
                        help="training recipe: a name (cpu, paper) or a YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a training option (as fmn train-stage1 --set)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=[*STAGE2_VARIANTS, "mask_layers", "grn_long"],
                        help=f"which runs: {[*STAGE2_VARIANTS, 'mask_layers', 'grn_long']}")
    parser.add_argument("--masked-layers", nargs="*", default=["res3"], help="Table 5 rows besides the recipe's")
    parser.add_argument("--alphas", type=float, nargs="*", default=[0.3, 0.7])
    parser.add_argument("--rerank", type=parse_rerank, nargs="*", default=[], metavar="K1,K2,LAMBDA",
                        help=f"re-ranking settings scored besides the paper's {K1},{K2},{LAMBDA_VALUE} (e.g. "
                             f"4,2,{LAMBDA_VALUE} for CUHK01's two gallery images per identity)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the tables from the runs already finished under --out (--rerank "
                        "settings they lack are scored from the descriptors they kept)")
    parser.add_argument("--reader-option", action="append", default=[], metavar="NAME=INT",
                        help="an option of the dataset's reader, e.g. split_id=1 or validation_identities=100 "
                             "(cuhk01)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ablation"))
    args = parser.parse_args(argv)

    base = load_recipe(args.preset, **parse_overrides(args.set))
    root = Path(args.root) if args.root else ROOT / "data" / args.dataset
    if args.dataset == "synthetic" and not root.exists():
        _log(f"generating the synthetic '{args.synthetic_preset}' dataset into {root}")
        generate_synthetic(root, args.synthetic_preset)
    reader_options = {}
    for option in args.reader_option:
        name, _, value = option.partition("=")
        reader_options[name] = int(value)
    table = read_dataset(args.dataset, root, **reader_options).table
    train = table[table["split"] == "train"]
    test = table[table["split"].isin(["query", "gallery"])].reset_index(drop=True)
    _log(f"{args.dataset}: {len(train)} training images, {len(test)} query + gallery images; "
         f"decoding them once at {base.input_size}")
    start, per_seed = time.perf_counter(), {}
    if args.report_only:
        per_seed = {seed: found for seed in args.seeds if (found := finished_runs(Path(args.out), seed))}
        for seed, runs in per_seed.items():
            if "fmn" in runs:
                runs["fmn"] = add_rerank_rows(Path(args.out) / f"seed{seed}" / "fmn", runs["fmn"], tuple(args.rerank))
        _log(f"report of the finished runs under {args.out}: seeds {sorted(per_seed)}")
    else:
        train_cache = ImageCache.build(train["path"].tolist(), base.input_size)
        test_cache = ImageCache.build(test["path"].tolist(), base.input_size)
    for seed in [] if args.report_only else args.seeds:
        per_seed[seed] = run_seed(seed, args, table, train_cache, test_cache, base)
        _, markdown = summarise(per_seed, args.masked_layers, tuple(args.rerank))
        print(markdown, flush=True)
    rows, markdown = summarise(per_seed, args.masked_layers, tuple(args.rerank))
    paired, paired_markdown = paired_differences(per_seed)
    markdown += "\n\n" + paired_markdown
    timing, timing_markdown = training_time(Path(args.out), sorted(per_seed))
    if timing_markdown:
        markdown += "\n\n" + timing_markdown
    scored = sum(run.get("seconds", 0) for runs in per_seed.values() for run in runs.values())
    header = (f"Ablations on {args.dataset} ({root}), recipe '{args.preset}' {args.set or ''}, seeds {sorted(per_seed)}"
              f"; {machine()}; {time.perf_counter() - start:.0f} s this call, {scored:.0f} s in the scored runs "
              "(stage 2 with its evaluation; the shared GRN not included).")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(header + "\n\n" + markdown + "\n")
    (out / "ablation.json").write_text(json.dumps({
        "dataset": args.dataset, "root": str(root), "preset": args.preset, "overrides": args.set,
        "reader_options": reader_options, "rerank_grid": args.rerank, "paired": paired,
        "config": base.to_dict(), "seeds": sorted(per_seed), "machine": machine(), "platform": platform.platform(),
        "rows": rows, "training_time": timing, "per_seed": {str(k): v for k, v in per_seed.items()}}, indent=1))
    print(header)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
