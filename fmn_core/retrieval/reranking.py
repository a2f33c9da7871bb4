"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), section 3.5 of the paper.

:func:`re_ranking` is a drop-in for the function the re-ID toolkits copy from
the authors' code: same arguments (squared Euclidean query-gallery,
query-query and gallery-gallery distance matrices), same result to float32
rounding. The algorithm, as published, on the N = queries + gallery items:

1. square the input distances once more, divide each column by its maximum
   and transpose (float32); rank every row (``np.argsort``);
2. R(i): the k-reciprocal neighbours of i among its k1+1 nearest; expand R(i)
   with the (k1/2)-reciprocal set of every member c whose set shares more
   than 2/3 of its elements with R(i);
3. V(i, j) = exp(-d(i, j)) normalised over the expanded set (0 elsewhere);
   with k2 > 1, V(i) becomes the mean of V over i's k2 nearest (query expansion);
4. Jaccard distance 1 - s / (2 - s), s(i, j) = sum_k min(V(i, k), V(j, k));
   final = (1 - lambda) * Jaccard + lambda * d, query rows, gallery columns.

The published code holds five dense N x N matrices (about 8 GB at
Market-1501 scale) and loops in Python over every item. Here only the k1+1
nearest neighbours of each row are kept (found block by block with a partial
sort, ``torch.topk``), the neighbour sets are built with vectorised set
operations over index pairs, V is a sparse matrix, and the Jaccard sums
visit only the non-zero entries. Rows whose k1+2 smallest distances contain a
tie are ranked with ``np.argsort`` itself, so the neighbour sets, and hence
the result, are those of the published code even with duplicate images.

:func:`re_ranking_features` computes the same thing from descriptors without
ever building an N x N matrix: distance rows are computed, ranked and thrown
away block by block. It is the path for galleries whose distance matrices do
not fit in memory (MSMT17: 93,820 items). Pass ``device="cuda"`` to either
function to compute distances and rankings on the GPU (GPU rankings break
ties in their own order; results agree with the CPU to float rounding).

Behaviour on unusual input: NaN or infinite distances raise ``ValueError``;
mismatched shapes raise ``ValueError``; ``k1`` or ``k2`` larger than the
number of items use all items, as the published code does (its slices simply
stop at the end); tiny negative distances (rounding on a diagonal) are
squared like any other value, as in the published code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from fmn_core.utils.errors import FMNInputError

#: The published settings (Zhong et al. 2017, used by the paper): the k-reciprocal neighbourhood k1, the query
#: expansion k2 and the weight lambda of the original distance. Every default of k1, k2 and lambda in the project
#: (the functions here, ``fmn evaluate``, search, the Dagster evaluation config) is these names;
#: tests/unit/test_rerank_defaults.py fails on a second copy of the numbers.
K1 = 20
K2 = 6
LAMBDA_VALUE = 0.3


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _MatrixRows:
    """Rows of the normalised distance matrix, built from the three input matrices."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_query, self.num_gallery = q_g.shape
        self.n = self.num_query + self.num_gallery

    def squared_rows(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Row i is column i of [[QQ, QG], [QG^T, GG]], squared (the published code's transpose)."""
        nq = self.num_query
        parts = []
        if start < nq:
            end = min(stop, nq)
            parts.append(np.concatenate([self.q_q[:, start:end].T, self.q_g[start:end, :]], axis=1))
        if stop > nq:
            begin = max(start, nq) - nq
            parts.append(np.concatenate([self.q_g[:, begin:stop - nq].T, self.g_g[:, begin:stop - nq].T], axis=1))
        block = torch.from_numpy(np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])
        return block.mul_(block).to(device=device, dtype=torch.float32)  # squared in the input's precision

    def squared_pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Entry (i, j) of the rows above: M[j, i] squared, M = [[QQ, QG], [QG^T, GG]]."""
        nq = self.num_query
        out = np.empty(len(rows), dtype=np.float32)
        for row_is_q in (True, False):
            for col_is_q in (True, False):
                sel = ((rows < nq) == row_is_q) & ((cols < nq) == col_is_q)
                if not sel.any():
                    continue
                r, c = rows[sel], cols[sel]
                if row_is_q and col_is_q:
                    values = self.q_q[c, r]
                elif row_is_q:
                    values = self.q_g[r, c - nq]
                elif col_is_q:
                    values = self.q_g[c, r - nq]
                else:
                    values = self.g_g[c - nq, r - nq]
                out[sel] = np.square(values).astype(np.float32, copy=False)
        return out

    def query_gallery_squared(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.square(self.q_g[start:stop]).astype(np.float32, copy=False)).to(device)


class _FeatureRows:
    """The same rows, computed from descriptors: d(i, j) = ||f_i - f_j||^2, squared again."""

    def __init__(self, query: np.ndarray, gallery: np.ndarray, device: torch.device):
        features = np.concatenate([query, gallery]).astype(np.float32, copy=False)
        self.features = torch.from_numpy(features).to(device)
        self.norms = (self.features * self.features).sum(1)
        self.num_query, self.num_gallery = len(query), len(gallery)
        self.n = len(features)

    def _distance(self, rows: torch.Tensor, row_norms: torch.Tensor, cols: torch.Tensor,
                  col_norms: torch.Tensor) -> torch.Tensor:
        d = row_norms[:, None] + col_norms[None, :] - 2.0 * rows @ cols.T
        return d.clamp_(min=0)

    def squared_rows(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        d = self._distance(self.features[start:stop], self.norms[start:stop], self.features, self.norms)
        return d.mul_(d)

    def squared_pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.float32)
        step = max(1, (1 << 25) // self.features.shape[1])  # two gathers of at most 128 MB each
        for s in range(0, len(rows), step):
            r = torch.as_tensor(rows[s:s + step], device=self.features.device)
            c = torch.as_tensor(cols[s:s + step], device=self.features.device)
            d = (self.norms[r] + self.norms[c] - 2.0 * (self.features[r] * self.features[c]).sum(1)).clamp_(min=0)
            out[s:s + step] = (d * d).cpu().numpy()
        return out

    def query_gallery_squared(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        nq = self.num_query
        d = self._distance(self.features[start:stop], self.norms[start:stop], self.features[nq:], self.norms[nq:])
        return d.mul_(d)


@dataclass
class _Ranking:
    neighbours: np.ndarray  # (N, min(max(k1 + 1, k2), N)) nearest items of each row, in argsort order
    column_max: np.ndarray  # (N,) max of each row of the squared matrix (the published code's column max)


def _block_rows(n: int, budget: int = 1 << 26) -> int:
    return max(1, min(n, budget // max(n, 1)))


def _rank(source, width: int, device: torch.device) -> _Ranking:
    """The ``width`` nearest neighbours of every row, tie-exact with ``np.argsort``."""
    n = source.n
    keep = min(width, n)
    probe = min(width + 1, n)  # one more, to see ties across the boundary
    neighbours = np.empty((n, keep), dtype=np.int64)
    column_max = np.empty(n, dtype=np.float32)
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        squared = source.squared_rows(start, stop, device)
        maxima = squared.amax(dim=1)
        if not torch.isfinite(maxima).all():  # values are >= 0, so a finite maximum means a finite row
            raise FMNInputError("distances must be finite; found NaN or infinity")
        if (maxima <= 0).any():
            bad = start + int(torch.nonzero(maxima <= 0)[0])
            raise FMNInputError(f"every distance involving item {bad} is zero: the distances cannot be normalised")
        # Dividing a row by its (positive) maximum keeps its order, so the nearest items can be found on
        # the squared values; only those are normalised, to see ties exactly as the published code does.
        raw, index = torch.topk(squared, probe, dim=1, largest=False, sorted=True)
        values = raw / maxima[:, None]
        tied = (values[:, 1:] == values[:, :-1]).any(dim=1) if probe > 1 else torch.zeros(len(values), dtype=bool)
        index = index[:, :keep].cpu().numpy()
        tied_rows = torch.nonzero(tied).flatten()
        if len(tied_rows):
            exact = (squared[tied_rows.to(squared.device)] / maxima[tied_rows, None]).cpu().numpy()
            index[tied_rows.cpu().numpy()] = np.argsort(exact, axis=1)[:, :keep]
        neighbours[start:stop] = index
        column_max[start:stop] = maxima.cpu().numpy()
    return _Ranking(neighbours, column_max)


def _reciprocal_pairs(neighbours: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) with j among i's k+1 nearest and i among j's: R(i, k), rows ascending, forward order kept."""
    n = neighbours.shape[0]
    width = min(k + 1, neighbours.shape[1])
    rows = np.repeat(np.arange(n, dtype=np.int64), width)
    cols = neighbours[:, :width].reshape(-1)
    codes = np.sort(rows * n + cols)
    reverse = cols * n + rows
    position = np.minimum(np.searchsorted(codes, reverse), len(codes) - 1)
    found = codes[position] == reverse
    return rows[found], cols[found]


def _segments(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[p], starts[p] + counts[p]) as one index array."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total, dtype=np.int64)


def _weights(source, ranking: _Ranking, k1: int, k2: int) -> sp.csr_matrix:
    """V: the k-reciprocal expansion weights, then query expansion over the k2 nearest."""
    n = ranking.neighbours.shape[0]
    r_rows, r_cols = _reciprocal_pairs(ranking.neighbours, k1)
    h_rows, h_cols = _reciprocal_pairs(ranking.neighbours, int(np.around(k1 / 2.0)))
    h_start = np.searchsorted(h_rows, np.arange(n))
    h_count = np.searchsorted(h_rows, np.arange(n), side="right") - h_start

    # For every candidate c in R(i): does R(c, k1/2) share more than 2/3 of its members with R(i)?
    counts = h_count[r_cols]
    pair_of = np.repeat(np.arange(len(r_rows)), counts)
    members = h_cols[_segments(h_start[r_cols], counts)]
    r_codes = np.sort(r_rows * n + r_cols)
    probe = r_rows[pair_of] * n + members
    position = np.minimum(np.searchsorted(r_codes, probe), len(r_codes) - 1)
    shared = np.bincount(pair_of, weights=(r_codes[position] == probe), minlength=len(r_rows))
    accepted = shared > 2.0 / 3 * counts
    keep_member = accepted[pair_of]

    rows = np.concatenate([r_rows, r_rows[pair_of[keep_member]]])
    cols = np.concatenate([r_cols, members[keep_member]])
    codes = np.unique(rows * n + cols)
    rows, cols = codes // n, codes % n
    dist = source.squared_pairs(rows, cols) / ranking.column_max[rows]
    weight = np.exp(-dist.astype(np.float32))
    totals = np.ones(n, dtype=np.float32)
    if len(weight):
        owners, first = np.unique(rows, return_index=True)
        totals[owners] = np.add.reduceat(weight, first)
    v = sp.csr_matrix((weight / totals[rows], (rows, cols)), shape=(n, n), dtype=np.float32)
    if k2 != 1:
        width = min(k2, ranking.neighbours.shape[1], n)
        mean = sp.csr_matrix((np.full(n * width, 1.0 / width, dtype=np.float32),
                              (np.repeat(np.arange(n), width), ranking.neighbours[:, :width].reshape(-1))),
                             shape=(n, n), dtype=np.float32)
        v = (mean @ v).tocsr()
    v.sum_duplicates()
    return v


def _final(source, ranking: _Ranking, v: sp.csr_matrix, lambda_value: float, device: torch.device) -> np.ndarray:
    """(1 - lambda) * Jaccard + lambda * distance, for query rows and gallery columns.

    Most query-gallery pairs share no k-reciprocal neighbour (Jaccard distance
    exactly 1), so the dense part is lambda * d + (1 - lambda) and only the
    pairs with some overlap are visited one by one.
    """
    nq, ng = source.num_query, source.num_gallery
    gallery = v[nq:].tocsc()
    out = np.empty((nq, ng), dtype=np.float32)
    col_counts = np.diff(gallery.indptr)
    per_query = max(1, int(np.diff(v.indptr[:nq + 1]).mean() * max(col_counts.mean(), 1)))
    step = max(1, min(nq, (1 << 24) // per_query, (1 << 26) // max(ng, 1)))
    for start in range(0, nq, step):
        stop = min(start + step, nq)
        block = v[start:stop].tocoo()
        counts = col_counts[block.col]
        owner = np.repeat(block.row.astype(np.int64), counts)
        entries = _segments(gallery.indptr[block.col].astype(np.int64), counts)
        overlap = np.minimum(np.repeat(block.data, counts), gallery.data[entries])
        shared = sp.csr_matrix((overlap, (owner, gallery.indices[entries])), shape=(stop - start, ng))
        shared.sum_duplicates()
        rows = np.repeat(np.arange(stop - start), np.diff(shared.indptr))
        maxima = torch.as_tensor(ranking.column_max[start:stop], device=device)[:, None]
        original = source.query_gallery_squared(start, stop, device).div_(maxima)
        near = original[torch.as_tensor(rows, device=device), torch.as_tensor(shared.indices, device=device)]
        final = original.mul_(lambda_value).add_(1.0 * (1 - lambda_value))  # Jaccard distance 1
        jaccard = torch.as_tensor(1 - shared.data / (2.0 - shared.data), dtype=torch.float32, device=device)
        final[torch.as_tensor(rows, device=device), torch.as_tensor(shared.indices, device=device)] = (
            jaccard * (1 - lambda_value) + near * lambda_value)
        out[start:stop] = final.cpu().numpy()
    return out


def _check_k(k1: int, k2: int, lambda_value: float) -> None:
    if int(k1) < 1 or int(k2) < 1:
        raise FMNInputError(f"k1 and k2 must be at least 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise FMNInputError(f"lambda_value must lie in [0, 1], got {lambda_value}")


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = K1, k2: int = K2, lambda_value: float = LAMBDA_VALUE,
               device: str | torch.device | None = "cpu") -> np.ndarray:
    """Re-ranked query x gallery distances from squared-Euclidean distance matrices.

    A drop-in for the toolkits' ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``.
    """
    _check_k(k1, k2, lambda_value)
    q_g, q_q, g_g = (np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m)
                     for m in (q_g_dist, q_q_dist, g_g_dist))
    if q_g.ndim != 2 or q_q.shape != (q_g.shape[0],) * 2 or g_g.shape != (q_g.shape[1],) * 2:
        raise FMNInputError(f"expected q_g (Q x G), q_q (Q x Q) and g_g (G x G); got {q_g.shape}, {q_q.shape} and "
                            f"{g_g.shape}")
    if q_g.shape[0] == 0 or q_g.shape[1] == 0:
        raise FMNInputError(f"nothing to re-rank: q_g_dist is {q_g.shape}")
    for name, m in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if not np.isfinite(m).all():
            raise FMNInputError(f"{name} has {int((~np.isfinite(m)).sum())} NaN or infinite entries")
    device = _device(device)
    source = _MatrixRows(q_g, q_q, g_g)
    ranking = _rank(source, max(int(k1) + 1, int(k2)), device)
    return _final(source, ranking, _weights(source, ranking, int(k1), int(k2)), lambda_value, device)


def re_ranking_features(query_features, gallery_features, k1: int = K1, k2: int = K2,
                        lambda_value: float = LAMBDA_VALUE, device: str | torch.device | None = "cpu") -> np.ndarray:
    """The same re-ranking from descriptors (squared Euclidean distances), without any N x N matrix.

    Peak memory is the Q x G output plus the descriptors plus a few hundred MB
    of working blocks, whatever the gallery size.
    """
    _check_k(k1, k2, lambda_value)
    query = np.asarray(query_features.detach().cpu() if isinstance(query_features, torch.Tensor) else query_features)
    gallery = np.asarray(gallery_features.detach().cpu() if isinstance(gallery_features, torch.Tensor)
                         else gallery_features)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise FMNInputError(f"expected query (Q x D) and gallery (G x D) descriptors, got {query.shape} and "
                            f"{gallery.shape}")
    if len(query) == 0 or len(gallery) == 0:
        raise FMNInputError(f"nothing to re-rank: {len(query)} queries, {len(gallery)} gallery items")
    if not (np.isfinite(query).all() and np.isfinite(gallery).all()):
        raise FMNInputError("descriptors contain NaN or infinite values")
    device = _device(device)
    source = _FeatureRows(query, gallery, device)
    ranking = _rank(source, max(int(k1) + 1, int(k2)), device)
    return _final(source, ranking, _weights(source, ranking, int(k1), int(k2)), lambda_value, device)
