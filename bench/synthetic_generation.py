"""Benchmark the synthetic dataset generator: images per second, including JPEG encoding and writing.

    python -m bench.synthetic_generation --preset small --workers 1
    python -m bench.synthetic_generation --preset market --workers 2

Writes a JSON record (default bench/results/synthetic_generation.json) so numbers can be compared
across machines and versions; the generated dataset goes to a temporary folder unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from fmn_core.data.synthetic import GENERATOR_VERSION, SYNTHETIC_PRESETS, generate_synthetic

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "synthetic_generation.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(SYNTHETIC_PRESETS),
                        help="dataset size (default: small)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default: 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset root to write (default: a temporary folder, deleted afterwards)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already at --out (otherwise an identical one is reused, not timed)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default: {DEFAULT_JSON})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = None if args.out is not None else Path(tempfile.mkdtemp(prefix="fmn-synthetic-bench-"))
    root = args.out if args.out is not None else scratch / args.preset
    try:
        wall = time.perf_counter()
        summary = generate_synthetic(root, args.preset, workers=args.workers, overwrite=args.overwrite)
        wall = time.perf_counter() - wall
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if summary.reused:
        print(f"{root} already holds this dataset: nothing generated, nothing measured (use --overwrite)")
    record = {
        "benchmark": "synthetic_generation",
        "generator_version": GENERATOR_VERSION,
        "preset": args.preset,
        "workers": args.workers,
        "images": summary.total_files,
        "counts": summary.counts,
        "junk_images": summary.junk_images,
        "distractor_images": summary.distractor_images,
        "seconds": round(summary.seconds, 3),
        "wall_seconds": round(wall, 3),
        "images_per_second": round(summary.images_per_second, 1),
        "reused": summary.reused,
        "config": summary.config.to_dict(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    header = f"{'preset':<8} {'images':>8} {'seconds':>9} {'images/s':>10} {'workers':>8}"
    print(header)
    print("-" * len(header))
    print(f"{args.preset:<8} {summary.total_files:>8} {summary.seconds:>9.2f} {summary.images_per_second:>10.1f} "
          f"{args.workers:>8}")
    for split, counts in summary.counts.items():
        print(f"  {split:<8} {counts['images']:>6} images  {counts['identities']:>5} identities")
    print(f"  junk     {summary.junk_images:>6} images  (pid -1, in bounding_box_test)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
