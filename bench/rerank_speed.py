"""Re-ranking and evaluation speed and memory, side by side with the plain NumPy versions.

    python -m bench.rerank_speed                      # Market-1501 scale: 3,368 queries x 15,913 gallery
    python -m bench.rerank_speed --scale msmt17       # 11,659 x 82,161: the feature path only
    python -m bench.rerank_speed --scale small        # a quick look

Descriptors are synthetic (identity centres plus noise, L2-normalised, like
real re-ID features) so the neighbour structure is realistic. Every row runs
in its own process, so the peak resident memory reported is that row's alone
(the input matrices or features included). Distance matrices are computed
before the timer starts for the matrix-based rows, as the toolkits do; the
feature-based row includes computing its distances. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

SCALES = {"small": (500, 2500, 120), "market": (3368, 15913, 751), "msmt17": (11659, 82161, 3060)}


def make_features(num_query: int, num_gallery: int, identities: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim)).astype(np.float32)
    q_ids = rng.integers(0, identities, num_query)
    g_ids = rng.integers(0, identities, num_gallery)
    q = centres[q_ids] + 1.2 * rng.normal(size=(num_query, dim)).astype(np.float32)
    g = centres[g_ids] + 1.2 * rng.normal(size=(num_gallery, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    cams = rng.integers(0, 6, num_query + num_gallery)
    return q, g, q_ids, g_ids, cams[:num_query], cams[num_query:]


def _job(name: str, args: dict, queue) -> None:
    from bench.reference import evaluate_reference, re_ranking_reference
    from fmn_core.retrieval import evaluate, pairwise_distance
    from fmn_core.retrieval.reranking import re_ranking, re_ranking_features

    q, g, q_ids, g_ids, q_cams, g_cams = make_features(*args["shape"], args["dim"])
    if name.startswith("evaluate"):
        distmat = pairwise_distance(q, g)
        start = time.perf_counter()
        if name == "evaluate (reference loop)":
            _, m_ap, _ = evaluate_reference(distmat, q_ids, g_ids, q_cams, g_cams)
        else:
            m_ap = evaluate(distmat, q_ids, g_ids, q_cams, g_cams).mAP
        seconds, check = time.perf_counter() - start, float(m_ap)
    elif name == "re_ranking_features":
        start = time.perf_counter()
        out = re_ranking_features(q, g, device=args["device"])
        seconds, check = time.perf_counter() - start, float(out[:, :50].mean())
    else:
        matrices = pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g)
        start = time.perf_counter()
        if name == "re_ranking (reference NumPy)":
            out = re_ranking_reference(*matrices)
        else:
            out = re_ranking(*matrices, device=args["device"])
        seconds, check = time.perf_counter() - start, float(out[:, :50].mean())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"what": name, "seconds": seconds, "peak_gb": peak_kb / 1024**2, "check": check})


def run(name: str, args: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_job, args=(name, args, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"what": name, "seconds": float("nan"), "peak_gb": float("nan"), "check": float("nan"),
                "error": f"exit code {process.exitcode} (killed for memory?)"}
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="market")
    parser.add_argument("--dim", type=int, default=2048, help="descriptor width (2048: GRN; 4096: FMN)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true", help="leave out the slow reference rows")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    num_query, num_gallery, identities = SCALES[args.scale]
    job = {"shape": (num_query, num_gallery, identities), "dim": args.dim, "device": args.device}

    names = ["evaluate (vectorised)", "re_ranking_features"]
    if args.scale != "msmt17":
        names = ["evaluate (reference loop)", *names[:1], "re_ranking (reference NumPy)", "re_ranking", *names[1:]]
        if args.skip_reference:
            names = [n for n in names if "reference" not in n]
    else:
        names = ["re_ranking_features"]
    rows = [run(name, job) for name in names]

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"\n{args.scale}: {num_query} queries x {num_gallery} gallery, {args.dim}-d descriptors, "
          f"device {args.device} ({machine})\n")
    print(f"{'what':<30} {'seconds':>9} {'peak RSS (GB)':>14} {'speed-up':>9}")
    reference = {r["what"].split(" ")[0]: r["seconds"] for r in rows if "reference" in r["what"]}
    for row in rows:
        base = reference.get(row["what"].split(" ")[0].replace("re_ranking_features", "re_ranking"))
        speedup = f"{base / row['seconds']:.1f}x" if base and "reference" not in row["what"] else ""
        print(f"{row['what']:<30} {row['seconds']:>9.2f} {row['peak_gb']:>14.2f} {speedup:>9}")
    out = args.json or Path(f"bench/results/rerank_speed_{args.scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scale": args.scale, "queries": num_query, "gallery": num_gallery, "dim": args.dim,
                               "device": args.device, "machine": machine, "rows": rows}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
