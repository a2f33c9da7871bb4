"""CMC, mAP and mINP under the single-query Market-1501 protocol (section 4.2).

Semantics are those of the widely used re-ID toolkits' ``eval_market1501``:

* for each query, the gallery images with the same person id **and** the same
  camera are removed, and nothing else; every id (0 and -1 included) is an
  ordinary label here, since dropping Market-1501's junk (-1) images is the
  dataset reader's job;
* queries left with no true match are skipped and counted;
* the gallery is ranked by ``np.argsort(distmat, axis=1)``'s order: AP is the
  plain (non-interpolated) mean of the precision at each true match, CMC(k) is
  the fraction of valid queries with a true match in the top k, and INP is
  (number of true matches) / (rank of the last one).

``average_precision="market1501_interpolated"`` gives instead the AP of the
official Market-1501 MATLAB code, which averages the precision before and at
each true match (a trapezoid under the precision-recall curve).

Speed: a full argsort of a Market-scale matrix (3,368 x 15,913) costs seconds.
This module sorts distance *values* only (rows in parallel threads) and finds
each true match's rank with a binary search, so only the handful of true
matches per query is touched one by one. The ranks equal argsort's unless a
true match's distance ties with a false match's; such queries (rare with real
features) are evaluated with ``np.argsort`` itself, so the result matches
argsort-based implementations exactly in every case.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fmn_core.utils.errors import FMNInputError

APMode = Literal["standard", "market1501_interpolated"]


@dataclass
class EvaluationResult:
    """Retrieval metrics; rates are fractions in [0, 1] (``summary`` gives percent)."""

    cmc: np.ndarray  # (max_rank,) cumulative match characteristic over valid queries
    mAP: float  # the name every re-ID toolkit uses
    mINP: float
    query_ap: np.ndarray  # (num_query,) AP per query, NaN where the query was skipped
    query_inp: np.ndarray  # (num_query,) INP per query, NaN where skipped
    first_match_rank: np.ndarray  # (num_query,) 0-based rank of the first true match, -1 where skipped
    num_valid: int
    num_skipped: int

    @property
    def valid(self) -> np.ndarray:
        return self.first_match_rank >= 0

    @property
    def ap(self) -> np.ndarray:
        """AP of the valid queries, in query order."""
        return self.query_ap[self.valid]

    def rank(self, k: int) -> float:
        """CMC at rank k (1-based)."""
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def summary(self, ranks: tuple[int, ...] = (1, 5, 10, 20)) -> dict[str, float]:
        """Rank-k, mAP and mINP in percent, as the paper's tables report them."""
        out = {f"rank{k}": 100.0 * self.rank(k) for k in ranks}
        out.update(mAP=100.0 * self.mAP, mINP=100.0 * self.mINP)
        return out


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids) -> tuple[np.ndarray, ...]:
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise FMNInputError(f"distmat must be 2-D (queries x gallery), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    arrays = []
    for name, values, expected in (("q_pids", q_pids, num_q), ("g_pids", g_pids, num_g),
                                   ("q_camids", q_camids, num_q), ("g_camids", g_camids, num_g)):
        values = np.asarray(values).reshape(-1)
        if len(values) != expected:
            raise FMNInputError(f"{name} has {len(values)} entries but distmat is {num_q} x {num_g} "
                                f"(expected {expected})")
        arrays.append(values)
    if num_q == 0 or num_g == 0:
        raise FMNInputError(f"nothing to evaluate: distmat is {num_q} x {num_g}")
    if not np.issubdtype(distmat.dtype, np.number):
        raise FMNInputError(f"distmat must be numeric, got dtype {distmat.dtype}")
    finite = np.isfinite(distmat)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise FMNInputError(f"distmat has {len(bad)} NaN or infinite entries (first at query {bad[0][0]}, "
                            f"gallery {bad[0][1]}); distances must be finite")
    return (distmat, *arrays)


def _ranks_by_argsort(row: np.ndarray, positives: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """0-based ranks among kept items of the true matches, in argsort's order (tie-exact)."""
    order = np.argsort(row)
    kept_order = order[kept[order]]
    return np.flatnonzero(positives[kept_order])


def _ap(ranks: np.ndarray, mode: APMode) -> float:
    """AP from the sorted 0-based ranks of the true matches among the kept items."""
    hits = np.arange(1, len(ranks) + 1, dtype=np.float64)
    positions = ranks.astype(np.float64) + 1.0
    precision = hits / positions
    if mode == "standard":
        return float(precision.mean())
    before = np.where(positions > 1, (hits - 1) / np.maximum(positions - 1, 1), 1.0)
    return float(((before + precision) / 2).mean())


def _evaluate_rows(distmat, rows, q_pids, g_pids, q_camids, g_camids, mode):
    """Ranks and metrics for a block of queries; returns (first rank, AP, INP) per row."""
    block = distmat[rows]
    sorted_block = np.sort(block, axis=1)
    same_pid = q_pids[rows, None] == g_pids[None, :]
    same_cam = q_camids[rows, None] == g_camids[None, :]
    junk_all = same_pid & same_cam
    positive_all = same_pid & ~same_cam
    first = np.full(len(rows), -1, dtype=np.int64)
    aps = np.full(len(rows), np.nan)
    inps = np.full(len(rows), np.nan)
    for i in range(len(rows)):
        positive_idx = np.flatnonzero(positive_all[i])
        if positive_idx.size == 0:
            continue
        row = block[i]
        values = row[positive_idx]
        junk_values = row[junk_all[i]]
        left = np.searchsorted(sorted_block[i], values, "left")
        right = np.searchsorted(sorted_block[i], values, "right")
        junk_less = (junk_values[None, :] < values[:, None]).sum(1)
        equal_positives = (values[None, :] == values[:, None]).sum(1)
        equal_junk = (junk_values[None, :] == values[:, None]).sum(1)
        if np.any(right - left > equal_positives + equal_junk):  # a true match ties a false one
            ranks = _ranks_by_argsort(row, positive_all[i], ~junk_all[i])
        else:
            ranks = np.sort(left - junk_less)
            ranks = ranks + (np.arange(len(ranks)) - np.searchsorted(ranks, ranks, "left"))
        first[i] = ranks[0]
        aps[i] = _ap(ranks, mode)
        inps[i] = len(ranks) / (ranks[-1] + 1.0)
    return first, aps, inps


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
             average_precision: APMode = "standard", workers: int | None = None) -> EvaluationResult:
    """Evaluate a query x gallery distance matrix (smaller = more similar).

    ``max_rank`` is cut to the gallery size when the gallery is smaller, as the
    toolkits do. Raises ``ValueError`` for mismatched shapes, non-finite
    distances, or when no query has a true match in the gallery.
    """
    if average_precision not in ("standard", "market1501_interpolated"):
        raise FMNInputError(f"average_precision must be 'standard' or 'market1501_interpolated', "
                            f"got {average_precision!r}")
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = distmat.shape
    max_rank = min(int(max_rank), num_g)
    if max_rank < 1:
        raise FMNInputError(f"max_rank must be at least 1, got {max_rank}")
    block = max(1, min(256, (1 << 24) // max(num_g, 1)))
    chunks = [np.arange(s, min(s + block, num_q)) for s in range(0, num_q, block)]
    workers = workers or min(len(chunks), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # numpy sorts release the GIL
        parts = list(pool.map(lambda r: _evaluate_rows(distmat, r, q_pids, g_pids, q_camids, g_camids,
                                                       average_precision), chunks))
    first = np.concatenate([p[0] for p in parts])
    query_ap = np.concatenate([p[1] for p in parts])
    query_inp = np.concatenate([p[2] for p in parts])
    valid = first >= 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise FMNInputError(f"none of the {num_q} queries has a true match in the gallery (same person id, "
                            "another camera): check that query and gallery come from the same test split")
    hist = np.bincount(first[valid], minlength=num_g)[:max_rank]
    cmc = np.cumsum(hist) / num_valid
    return EvaluationResult(cmc=cmc, mAP=float(np.mean(query_ap[valid])), mINP=float(np.mean(query_inp[valid])),
                            query_ap=query_ap, query_inp=query_inp, first_match_rank=first,
                            num_valid=num_valid, num_skipped=num_q - num_valid)
