"""Single-query search latency over a large gallery (the `fmn search` path, query extraction excluded).

    python -m bench.search_speed                         # 20,000 gallery descriptors, 2560-d and 4096-d
    python -m bench.search_speed --gallery 100000

The gallery is synthetic (identity centres plus noise, L2-normalised), held as
`fmn_core.retrieval.search.Gallery` holds a loaded table. Each query is timed
alone (batch of one), as a service answering one request would; the median
and the 95th percentile over the queries are reported, with and without
re-ranking the 100 nearest candidates. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fmn_core.retrieval.descriptors import DescriptorTable
from fmn_core.retrieval.search import Gallery
from fmn_core.utils.machine import machine_description


def synthetic_gallery(size: int, dim: int, identities: int = 2000, seed: int = 0) -> tuple[Gallery, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim)).astype(np.float32)
    ids = rng.integers(0, identities, size + 200)
    features = centres[ids] + 1.2 * rng.normal(size=(len(ids), dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    meta = pd.DataFrame({"path": [f"g/{i:06d}.jpg" for i in range(size)], "pid": ids[:size],
                         "camid": rng.integers(0, 6, size), "split": "gallery"})
    return Gallery.load(DescriptorTable(meta, {"fmn": features[:size]})), features[size:]


def time_queries(gallery: Gallery, queries: np.ndarray, rerank: bool, top_k: int) -> list[float]:
    gallery.rank(queries[:1], top_k, rerank=rerank)  # warm-up
    times = []
    for row in queries:
        start = time.perf_counter()
        gallery.rank(row[None], top_k, rerank=rerank)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=20000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2560, 4096],
                        help="descriptor widths: 2560 = EfficientNet-Lite0 FMN, 4096 = ResNet-50 FMN")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/search_speed.json"))
    args = parser.parse_args()
    rows = []
    for dim in args.dims:
        gallery, queries = synthetic_gallery(args.gallery, dim)
        for rerank in (False, True):
            times = time_queries(gallery, queries[: args.queries if not rerank else min(args.queries, 50)], rerank,
                                 args.top_k)
            rows.append({"gallery": args.gallery, "dim": dim, "rerank_top100": rerank,
                         "median_ms": round(float(np.median(times)), 2),
                         "p95_ms": round(float(np.percentile(times, 95)), 2), "queries": len(times)})
    print(f"single-query search, top {args.top_k}, {machine_description()}, torch {torch.__version__}\n")
    print("| gallery | dim | re-ranking (top 100) | median ms | p95 ms |\n|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['gallery']:,} | {r['dim']} | {'yes' if r['rerank_top100'] else 'no'} | {r['median_ms']} | "
              f"{r['p95_ms']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_description(), "python": platform.python_version(),
                                    "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
