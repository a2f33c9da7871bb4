"""Straightforward NumPy versions of the evaluation protocol and of k-reciprocal re-ranking.

They follow the published algorithms step by step with dense matrices and
per-item loops, exactly as the widely copied implementations do: slow (tens
of seconds and about 8 GB at Market-1501 scale for re-ranking) but easy to
check by eye. The fast versions in :mod:`fmn_core.retrieval.evaluation` and
:mod:`fmn_core.retrieval.reranking` are tested against them and benchmarked
next to them (``bench/rerank_speed.py``). Use those; these are yardsticks, kept
out of the package because only the tests and the benchmarks need them.
"""

from __future__ import annotations

import numpy as np

from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE
from fmn_core.utils.errors import FMNInputError


def evaluate_reference(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """(cmc, mAP, mINP) with one full argsort and a loop over queries."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_g = distmat.shape[1]
    max_rank = min(max_rank, num_g)
    order = np.argsort(distmat, axis=1)
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        ranked = order[q]
        kept = ~((g_pids[ranked] == q_pids[q]) & (g_camids[ranked] == q_camids[q]))
        hits = (g_pids[ranked][kept] == q_pids[q]).astype(np.float64)
        if hits.sum() == 0:
            continue
        cumulative = np.cumsum(hits)
        positions = np.arange(1, len(hits) + 1)
        aps.append(float((cumulative / positions * hits).sum() / hits.sum()))
        last = np.flatnonzero(hits)[-1]
        inps.append(cumulative[last] / (last + 1.0))
        cmc = np.minimum(cumulative, 1.0)[:max_rank]
        cmcs.append(np.pad(cmc, (0, max_rank - len(cmc)), mode="edge"))
    if not cmcs:
        raise FMNInputError("no query has a true match in the gallery")
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps))


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """k-reciprocal neighbours of i: its k+1 nearest that also count i among their k+1 nearest."""
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.any(backward == i, axis=1)]


def re_ranking_reference(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = K1,
                         k2: int = K2, lambda_value: float = LAMBDA_VALUE) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) with dense N x N matrices."""
    num_q = q_g_dist.shape[0]
    full = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]])
    squared = np.power(full, 2).astype(np.float32)
    dist = np.transpose(1.0 * squared / np.max(squared, axis=0))
    num_all = dist.shape[0]
    rank = np.argsort(dist).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    weights = np.zeros_like(dist, dtype=np.float32)
    for i in range(num_all):
        reciprocal = _reciprocal(rank, i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = _reciprocal(rank, candidate, half)
            if len(np.intersect1d(candidate_set, reciprocal)) > 2.0 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        weights[i, expansion] = 1.0 * w / np.sum(w)

    if k2 != 1:
        expanded = np.zeros_like(weights, dtype=np.float32)
        for i in range(num_all):
            expanded[i] = np.mean(weights[rank[i, :k2], :], axis=0)
        weights = expanded

    holders = [np.flatnonzero(weights[:, j] != 0) for j in range(num_all)]
    jaccard = np.zeros((num_q, num_all), dtype=np.float32)
    for i in range(num_q):
        overlap = np.zeros(num_all, dtype=np.float32)
        for j in np.flatnonzero(weights[i] != 0):
            others = holders[j]
            overlap[others] += np.minimum(weights[i, j], weights[others, j])
        jaccard[i] = 1 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]
