"""Command-line interface for people who do not use Dagster.

    fmn generate --preset small data/synthetic      # write the synthetic Market-style dataset
    fmn inspect market1501 /data/Market-1501        # read a dataset, print its report, save the split table
    fmn demo                                        # the default pipeline on synthetic data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmn_core.data import DATASET_READERS, DatasetError, read_dataset
from fmn_core.data.image_check import CHECK_MODES


def _generate(args: argparse.Namespace) -> int:
    from fmn_core.data.synthetic import generate_synthetic

    summary = generate_synthetic(args.root, args.preset, workers=args.workers, overwrite=args.overwrite)
    print(summary)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    loaded = read_dataset(args.dataset, args.root, check_images=args.check_images, strict=not args.lenient)
    print(loaded.report)
    if args.out:
        print(f"split table written to {loaded.save(args.out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fmn_core.data.synthetic import generate_synthetic

    root = Path(args.data_dir) / "synthetic"
    summary = generate_synthetic(root, args.preset, workers=args.workers)
    print(summary)
    loaded = read_dataset("synthetic", root, check_images="decode")
    print(loaded.report.to_markdown())
    out = loaded.save(Path(args.artifacts_dir) / "synthetic" / "splits.parquet")
    print(f"split table written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmn", description="Feature Mask Network for person re-identification")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write the synthetic Market-1501-style dataset")
    generate.add_argument("root", type=Path, help="dataset folder to create")
    generate.add_argument("--preset", default="small", help="tiny, small, medium or market")
    generate.add_argument("--workers", type=int, default=1)
    generate.add_argument("--overwrite", action="store_true", help="replace a dataset generated with other settings")
    generate.set_defaults(func=_generate)

    inspect = commands.add_parser("inspect", help="read a dataset, print its report, optionally save the split table")
    inspect.add_argument("dataset", choices=sorted(DATASET_READERS))
    inspect.add_argument("root", type=Path, help="dataset root (custom: the manifest CSV or its folder)")
    inspect.add_argument("--check-images", choices=CHECK_MODES, default="header")
    inspect.add_argument("--lenient", action="store_true", help="report errors instead of failing on them")
    inspect.add_argument("--out", type=Path, help="write the split table here (Parquet)")
    inspect.set_defaults(func=_inspect)

    demo = commands.add_parser("demo", help="the default pipeline on the synthetic dataset")
    demo.add_argument("--preset", default="small")
    demo.add_argument("--data-dir", default="data")
    demo.add_argument("--artifacts-dir", default="artifacts")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
