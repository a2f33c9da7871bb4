"""Command-line interface for people who do not use Dagster.

    fmn generate --preset small data/synthetic      # write the synthetic Market-style dataset
    fmn inspect market1501 /data/Market-1501        # read a dataset, print its report, save the split table
    fmn inspect cuhk01 /data/CUHK01/campus --split-id 0   # CUHK01, 485/486 identities
    fmn train-stage1 --dataset synthetic --root data/synthetic --config cpu --out runs/demo
    fmn train-stage2 --dataset synthetic --root data/synthetic --config cpu --out runs/demo \
        --grn runs/demo/grn.pt
    fmn export runs/demo/fmn.pt --out fmn.onnx       # ONNX, written only if onnxruntime matches PyTorch
    fmn search --gallery gallery_descriptors.parquet --model fmn.onnx query.jpg --out result.png
    fmn demo                                        # the default pipeline on synthetic data

Multi-GPU: ``torchrun --nproc_per_node 4 -m fmn_core train-stage1 ...``.
Any training option can be changed with ``--set name=value`` (see ``fmn_core.engine.config``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from fmn_core.data import DATASET_READERS, DatasetError, read_dataset
from fmn_core.data.image_check import CHECK_MODES
from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE
from fmn_core.utils.env import DEBUG, OFFLINE, flag
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.output_guard import check_output


def _generate(args: argparse.Namespace) -> int:
    from fmn_core.data.synthetic import generate_synthetic

    summary = generate_synthetic(args.root, args.preset, workers=args.workers, overwrite=args.overwrite)
    print(summary)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.out:
        manifest = args.root / "manifest.csv" if args.root.is_dir() else args.root
        check_output(args.out, [args.root, manifest], "split table")
    loaded = read_dataset(args.dataset, args.root, check_images=args.check_images, strict=not args.lenient,
                          **_reader_options(args))
    print(loaded.report)
    if args.out:
        print(f"split table written to {loaded.save(args.out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Generate the synthetic data, train both stages with the CPU preset, extract, evaluate."""
    from fmn_core.data.synthetic import generate_synthetic
    from fmn_core.engine import preset, train_stage1, train_stage2
    from fmn_core.retrieval import extract_descriptors
    from fmn_core.retrieval.results import evaluate_descriptors, results_markdown

    root = Path(args.data_dir) / "synthetic"
    out = Path(args.artifacts_dir) / "synthetic"
    print(generate_synthetic(root, args.preset, workers=args.workers))
    loaded = read_dataset("synthetic", root, check_images="decode")
    print(loaded.report.to_markdown())
    loaded.save(out / "splits.parquet")
    config = preset("cpu")
    first = train_stage1(loaded.table, config, out)
    second = train_stage2(loaded.table, config, first.checkpoint, out)
    descriptors, _ = extract_descriptors(second.checkpoint, loaded.table)
    descriptors.save(out / "descriptors.parquet")
    print(results_markdown(evaluate_descriptors(descriptors, rerank=True)))
    print(f"checkpoints, descriptors and metrics are in {out}/")
    return 0


def _load_table(args: argparse.Namespace):
    from fmn_core.data import load_split_table

    if args.splits:  # --root with --splits: where the dataset is now, when it moved after the table was written
        return load_split_table(args.splits, root=args.root)
    if not (args.dataset and args.root):
        raise FMNInputError("give either --splits (a saved split table) or --dataset and --root")
    loaded = read_dataset(args.dataset, args.root, **_reader_options(args))
    for finding in loaded.report.findings:  # what the reader skipped must not vanish without a word
        if finding.severity != "info":
            print(f"warning: {finding.kind}: {finding.message} (count={finding.count}), e.g. "
                  f"{finding.examples[:1]}", file=sys.stderr)
    return loaded.table


def train_from_args(args: argparse.Namespace, on_epoch_end=None):
    """``fmn train-stage1/2`` as a call: the parsed arguments in, the TrainResult out.

    ``on_epoch_end(stage, epoch, row)`` is called on every rank after each epoch, so a
    caller (an orchestrator's torchrun entry point) can report progress as it happens.
    """
    from fmn_core.engine import load_recipe, parse_overrides, train_stage1, train_stage2

    config = load_recipe(args.config, **parse_overrides(args.set))
    config.require_epochs(args.stage, args.command)
    if args.out.exists() and not args.out.is_dir():
        raise FMNInputError(f"--out {args.out} is a file; give the folder for checkpoints and metrics")
    table = _load_table(args)
    if args.stage == 1:
        return train_stage1(table, config, args.out, resume=not args.no_resume, on_epoch_end=on_epoch_end)
    return train_stage2(table, config, args.grn, args.out, resume=not args.no_resume, on_epoch_end=on_epoch_end)


def _train(args: argparse.Namespace) -> int:
    result = train_from_args(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"stage {result.stage}: {result.epochs} epochs in {result.wall_seconds:.1f} s "
              f"({result.images_per_second:.0f} images/s on {result.device}); final {result.final}")
        print(f"checkpoint written to {result.checkpoint}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from fmn_core.retrieval import extract_descriptors

    check_output(args.out, [args.splits, args.checkpoint], "descriptor table")
    table = _load_table(args)
    descriptors, rate = extract_descriptors(args.checkpoint, table, batch_size=args.batch_size, device=args.device,
                                            flip=args.flip)
    path = descriptors.save(args.out)
    print(f"{len(descriptors)} descriptors ({rate:.0f} images/s) written to {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fmn_core.retrieval.descriptors import DescriptorTable
    from fmn_core.retrieval.results import evaluate_descriptors, results_markdown

    if args.json:
        check_output(args.json, list(args.descriptors), "metrics file")
    table = DescriptorTable.concat([DescriptorTable.load(path) for path in args.descriptors],
                                   allow_mixed_datasets=args.allow_mixed_datasets)
    if not 0 <= args.lambda_value <= 1:
        raise FMNInputError(f"--lambda {args.lambda_value}: expected a weight between 0 and 1")
    if args.k2 > args.k1:
        raise FMNInputError(f"--k2 {args.k2} is larger than --k1 {args.k1}; the query expansion takes at most k1 "
                            "neighbours")
    results = evaluate_descriptors(table, rerank=args.rerank, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)
    print(results_markdown(results))
    skipped = max(r.num_skipped for r in results.values())
    if skipped:
        print(f"note: {skipped} of {skipped + results[next(iter(results))].num_valid} queries have no true match "
              "under another camera and are in no average", file=sys.stderr)
    if args.json:
        from fmn_core.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({k: {**v.summary(), "valid_queries": v.num_valid,
                                                     "skipped_queries": v.num_skipped}
                                                 for k, v in results.items()}, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from fmn_core.export import export_onnx, parity_images

    if args.out.suffix.lower() != ".onnx":  # fmn search picks its loader by extension: .pt means a checkpoint
        raise FMNInputError(f"--out {args.out}: fmn export writes an ONNX model; give a name ending in .onnx "
                            f"(e.g. {args.out.with_suffix('.onnx')}), since fmn search reads .pt files as checkpoints")
    check_output(args.out, [args.checkpoint, args.splits], "ONNX model")
    images = parity_images(_load_table(args)) if (args.splits or args.dataset) else None
    result = export_onnx(args.checkpoint, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch,
                         batch_size=args.batch_size, outputs=args.outputs, tolerance=args.tolerance, images=images,
                         queries=max(1, min(8, len(images) - 1)) if images else None)
    parity = result.parity
    print(f"parity on {parity.images} {'dataset' if images else 'fixed synthetic'} images: max abs difference "
          + ", ".join(f"{k} {v:.2e}" for k, v in parity.max_abs.items()) + f" (tolerance {parity.tolerance:.0e}); "
          f"rankings identical for {parity.rankings_identical}/{parity.queries} queries")
    print(f"ONNX model ({result.size_bytes / 1e6:.1f} MB, opset {args.opset}, batch "
          f"{result.metadata.batch_size or 'dynamic'}, outputs {', '.join(result.metadata.outputs)}, model hash "
          f"{result.metadata.model_hash}) written to {result.path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    import pandas as pd

    from fmn_core.retrieval.search import Gallery, search

    args.queries = list(dict.fromkeys(args.queries))  # a query named twice is searched once
    inputs = [args.gallery, args.model, *args.queries]
    if args.out:
        check_output(args.out, inputs, "picture")
    if args.csv:
        check_output(args.csv, inputs, "CSV file")
    gallery = Gallery.load(args.gallery, args.kind, root=args.root)
    print(f"gallery: {gallery.splits} images from {args.gallery}", file=sys.stderr)
    results = search(args.model, gallery, args.queries, top_k=args.top_k, rerank=args.rerank, kind=args.kind)
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 80):
        for query, rows in results.groupby("query", sort=False):
            print(f"{query}:")
            print(rows.drop(columns="query").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        from fmn_core.viz import plot_search_results

        shown = min(args.top_k, len(gallery), MAX_PICTURE_COLUMNS)  # every result in the table, a readable picture
        title = f"top {shown} of {len(gallery)} gallery images" + (" (re-ranked)" if args.rerank else "")
        picture = plot_search_results(results, args.queries, args.out, shown, title=title)
        print(f"picture written to {picture}")
    if args.csv:
        from fmn_core.utils.atomic import atomic_write_text

        atomic_write_text(args.csv, results.to_csv(index=False))
    return 0


#: Gallery images per row of the search picture at most; the table and the CSV hold all --top-k.
MAX_PICTURE_COLUMNS = 20


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number of at least 0, got {text!r}")
    return value


def _opset(text: str) -> int:
    from fmn_core.export.onnx_export import supported_opsets

    opsets = supported_opsets()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value not in opsets:
        raise argparse.ArgumentTypeError(f"expected an opset from {opsets.start} to {opsets.stop - 1}, got {text!r}")
    return value


def _reader_options(args: argparse.Namespace) -> dict:
    """Options only some readers take (CUHK01's split), refused by name for the others."""
    options = {"split_id": args.split_id} if getattr(args, "split_id", None) is not None else {}
    if options and args.dataset != "cuhk01":
        raise FMNInputError(f"--split-id chooses a CUHK01 split; dataset '{args.dataset}' has one fixed split")
    return options


def _add_split_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split-id", type=_non_negative_int, default=None,
                        help="cuhk01: 0 = the fixed sorted 485/486 split (default), 1.. = seeded random splits")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(DATASET_READERS), help="dataset name (with --root)")
    parser.add_argument("--root", type=Path, help="dataset root (with --splits: where a moved dataset is now)")
    parser.add_argument("--splits", type=Path, help="a saved split table instead of --dataset/--root")
    _add_split_id(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmn", description="Feature Mask Network for person re-identification")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write the synthetic Market-1501-style dataset")
    generate.add_argument("root", type=Path, help="dataset folder to create")
    generate.add_argument("--preset", default="small", help="tiny, small, medium or market")
    generate.add_argument("--workers", type=_positive_int, default=1)
    generate.add_argument("--overwrite", action="store_true", help="replace a dataset generated with other settings")
    generate.set_defaults(func=_generate)

    inspect = commands.add_parser("inspect", help="read a dataset, print its report, optionally save the split table")
    inspect.add_argument("dataset", choices=sorted(DATASET_READERS))
    inspect.add_argument("root", type=Path, help="dataset root (custom: the manifest CSV or its folder)")
    inspect.add_argument("--check-images", choices=CHECK_MODES, default="header")
    inspect.add_argument("--lenient", action="store_true", help="report errors instead of failing on them")
    inspect.add_argument("--out", type=Path, help="write the split table here (Parquet)")
    _add_split_id(inspect)
    inspect.set_defaults(func=_inspect)

    for stage, text in ((1, "stage 1: fine-tune the GRN (Algorithm 1, lines 1-2)"),
                        (2, "stage 2: freeze the GRN, train MN + LAN (Algorithm 1, line 3)")):
        name = f"train-stage{stage}"
        train = commands.add_parser(name, help=text)
        _add_data_arguments(train)
        train.add_argument("--config", "--preset", dest="config", default="cpu", metavar="RECIPE",
                           help="a recipe name (cpu, paper, ablation/constant_mask, ...) or a YAML file such as the "
                                "*.config.yaml written beside every checkpoint (default cpu)")
        train.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change one option")
        train.add_argument("--out", type=Path, required=True, help="folder for checkpoints and metrics")
        train.add_argument("--no-resume", action="store_true", help="ignore a partial checkpoint in --out")
        if stage == 2:
            train.add_argument("--grn", type=Path, required=True, help="the stage-1 checkpoint (grn.pt)")
        train.set_defaults(func=_train, stage=stage)

    extract = commands.add_parser("extract", help="query and gallery descriptors (GRN, LAN, FMN) to Parquet")
    _add_data_arguments(extract)
    extract.add_argument("--checkpoint", type=Path, required=True, help="the stage-2 checkpoint (fmn.pt)")
    extract.add_argument("--out", type=Path, required=True, help="descriptor table to write (.parquet)")
    extract.add_argument("--batch-size", type=_positive_int, default=256)
    extract.add_argument("--device", default="auto")
    extract.add_argument("--flip", action="store_true", help="average with the mirrored image's features")
    extract.set_defaults(func=_extract)

    evaluate = commands.add_parser("evaluate", help="CMC / mAP / mINP of a descriptor table (Table 1's rows)")
    evaluate.add_argument("descriptors", type=Path, nargs="+",
                          help="a table written by 'fmn extract', or the pipeline's query_descriptors.parquet and "
                               "gallery_descriptors.parquet together")
    evaluate.add_argument("--rerank", action="store_true", help="add the FMN + k-reciprocal re-ranking row")
    evaluate.add_argument("--k1", type=_positive_int, default=K1,
                          help=f"re-ranking's k-reciprocal neighbourhood (paper: {K1}; CUHK01's two gallery images "
                               "per identity: 4, chosen on a validation split, docs/results.md)")
    evaluate.add_argument("--k2", type=_positive_int, default=K2, help=f"re-ranking's query expansion (paper: {K2}; "
                                                                     "CUHK01: 2)")
    evaluate.add_argument("--lambda", dest="lambda_value", type=float, default=LAMBDA_VALUE,
                          help=f"weight of the original distance ({LAMBDA_VALUE})")
    evaluate.add_argument("--json", type=Path, help="also write the metrics here")
    evaluate.add_argument("--allow-mixed-datasets", action="store_true",
                          help="score tables from different split tables or image roots together (refused by "
                               "default: equal pid numbers of two datasets are not the same people)")
    evaluate.set_defaults(func=_evaluate)

    export = commands.add_parser("export", help="the descriptor model as ONNX, checked against PyTorch first")
    export.add_argument("checkpoint", type=Path, help="the stage-2 checkpoint (fmn.pt)")
    export.add_argument("--out", type=Path, required=True, help="ONNX file to write (atomically, after the check)")
    export.add_argument("--opset", type=_opset, default=18, help="ONNX opset (default 18)")
    export.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (default: fixed)")
    export.add_argument("--batch-size", type=_positive_int, default=1,
                        help="the fixed batch size without --dynamic-batch")
    export.add_argument("--outputs", nargs="+", default=["fmn"], choices=["fmn", "grn", "lan"],
                        help="descriptors to output (fmn: eq. 6; grn, lan: Table 1's single-network rows)")
    export.add_argument("--tolerance", type=_tolerance, default=1e-4, help="largest allowed |ONNX - PyTorch|")
    _add_data_arguments(export)  # optional: check parity on the dataset's own images
    export.set_defaults(func=_export)

    search = commands.add_parser("search", help="rank a gallery for query images (top-k table and a picture)")
    search.add_argument("queries", type=Path, nargs="+", metavar="QUERY_IMAGE")
    search.add_argument("--gallery", type=Path, required=True, help="a descriptor table (gallery_descriptors.parquet)")
    search.add_argument("--model", type=Path, required=True, help="fmn.pt or its ONNX export")
    search.add_argument("--top-k", type=_positive_int, default=10)
    search.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking of the nearest candidates")
    search.add_argument("--kind", default="fmn", choices=["fmn", "grn", "lan"])
    search.add_argument("--root", type=Path, help="where the gallery's images are now, if they moved")
    search.add_argument("--out", type=Path, help="write a Figure-4-style picture (PNG)")
    search.add_argument("--csv", type=Path, help="write the results as CSV")
    search.set_defaults(func=_search)

    demo = commands.add_parser("demo", help="the default pipeline on the synthetic dataset")
    demo.add_argument("--preset", default="small")
    demo.add_argument("--data-dir", default="data")
    demo.add_argument("--artifacts-dir", default="artifacts")
    demo.add_argument("--workers", type=_positive_int, default=2)
    demo.set_defaults(func=_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one 'warning:' line, like the errors, without the library's source line."""
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    with warnings.catch_warnings():  # restored on return: a caller's own warning display stays as it was
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    debug = False
    try:
        debug = flag(DEBUG)
        flag(OFFLINE)  # refused before any work, not when the weights are first needed
        return args.func(args)
    except (DatasetError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a case no check foresaw: still one line, with a way to get the traceback
        if debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (FMN_DEBUG=1 shows the traceback; please report it)",
              file=sys.stderr)
        return 2
