"""Query-by-image search over a gallery of descriptors (what Figure 4 shows, for any picture).

The gallery is a descriptor table (``fmn extract`` or the pipeline's
``gallery_descriptors.parquet``); the queries are images, turned into
descriptors by a checkpoint or its ONNX export. A gallery made by another
model is refused: its width or its model hash differs from the query model's.
Ranking is a matrix-vector product against the gallery (its squared norms are
computed once), then a partial sort: a 20,000-image gallery answers in a few
milliseconds on a CPU (``bench/search_speed.py``).

``rerank=True`` applies k-reciprocal re-ranking (Zhong et al.) to the query and
its ``rerank_candidates`` nearest gallery images, as single-query services do:
re-ranking the whole gallery for every query would need every gallery image's
neighbours and cost minutes at this size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fmn_core.retrieval.descriptors import DescriptorTable
from fmn_core.retrieval.extractor import FeatureExtractor, ImageLike
from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE, re_ranking_features
from fmn_core.utils.errors import FMNInputError


class GalleryError(FMNInputError):
    """The gallery table cannot be searched with this model."""


class GalleryWarning(UserWarning):
    """The gallery can be searched, but is probably not what the user meant (another split)."""


@dataclass
class Gallery:
    """Gallery rows of a descriptor table, held ready for ranking one descriptor kind."""

    table: DescriptorTable
    kind: str
    source: str
    matrix: torch.Tensor
    squared_norms: torch.Tensor

    @classmethod
    def load(cls, source: str | Path | DescriptorTable, kind: str = "fmn", root: str | Path | None = None) -> Gallery:
        """The ``gallery`` rows of a table (every row when it has none), for descriptor ``kind``."""
        name = "the given table" if isinstance(source, DescriptorTable) else str(source)
        table = source if isinstance(source, DescriptorTable) else DescriptorTable.load(source, root=root)
        if (table.meta["split"] == "gallery").any():
            table = table.subset("gallery")
        elif len(table):  # searching another split is allowed (a query set against itself), never silently
            warnings.warn(f"gallery {name} holds no gallery-split rows ({table.split_counts()}): the search ranks "
                          "those images, not a gallery. Give the table fmn extract wrote for the gallery split (the "
                          "pipeline's gallery_descriptors.parquet)", GalleryWarning, stacklevel=2)
        if len(table) == 0:
            raise GalleryError(f"gallery {name} is empty: it has no row to search")
        if kind not in table.features:
            raise GalleryError(f"gallery {name} holds no '{kind}' descriptors (it has {sorted(table.features)})")
        matrix = torch.from_numpy(np.ascontiguousarray(table.features[kind], dtype=np.float32))
        if not torch.isfinite(matrix).all():
            bad = int((~torch.isfinite(matrix).all(dim=1)).sum())
            raise GalleryError(f"gallery {name} has {bad} NaN / infinite '{kind}' descriptors; extract it again")
        return cls(table, kind, name, matrix, (matrix * matrix).sum(dim=1))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def splits(self) -> str:
        """What the gallery holds, for the CLI's summary line: '116 gallery'."""
        return self.table.split_counts()

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])

    def check_model(self, width: int, model_hash: str | None) -> None:
        """Refuse descriptors of another model: a different width, or a different weights hash."""
        if width != self.width:
            raise GalleryError(f"gallery {self.source} holds {self.width}-d '{self.kind}' descriptors, the query model "
                               f"gives {width}-d ones: the gallery was made by another model; extract it with this "
                               "one (fmn extract)")
        if self.table.model_hash is None:
            warnings.warn(f"gallery {self.source} records no model hash (written by an older version): cannot "
                          "check that it was made by the query model", stacklevel=3)
        elif model_hash and model_hash != self.table.model_hash:
            raise GalleryError(f"gallery {self.source} was made by the model with hash {self.table.model_hash}, the "
                               f"query model has hash {model_hash}: distances between them mean nothing; extract "
                               "the gallery with this model (fmn extract)")

    def rank(self, queries: np.ndarray | torch.Tensor, top_k: int = 10, rerank: bool = False,
             rerank_candidates: int = 100, k1: int = K1, k2: int = K2,
             lambda_value: float = LAMBDA_VALUE) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances), each ``(queries, k)``: the k nearest gallery rows, nearest first.

        Distances are squared Euclidean, or re-ranked distances with ``rerank``.
        """
        q = torch.as_tensor(queries, dtype=torch.float32)
        if q.ndim != 2 or q.shape[1] != self.width:
            raise GalleryError(f"query descriptors must be (n, {self.width}), got {tuple(q.shape)}")
        if top_k < 1:
            raise FMNInputError(f"top_k must be at least 1, got {top_k}")
        pool = min(len(self), max(top_k, rerank_candidates) if rerank else top_k)
        distances = (q * q).sum(dim=1, keepdim=True) + self.squared_norms[None, :] - 2.0 * (q @ self.matrix.T)
        nearest, order = torch.topk(distances.clamp_(min=0), pool, dim=1, largest=False, sorted=True)
        indices, values = order.numpy(), nearest.numpy()
        if rerank:
            for row in range(len(q)):
                candidates = indices[row]
                reranked = re_ranking_features(q[row:row + 1].numpy(), self.matrix[candidates].numpy(), k1=k1, k2=k2,
                                               lambda_value=lambda_value)[0]
                new_order = np.argsort(reranked, kind="stable")
                indices[row], values[row] = candidates[new_order], reranked[new_order]
        keep = min(top_k, len(self))
        return indices[:, :keep], values[:, :keep]


def search(model: str | Path | FeatureExtractor, gallery: str | Path | DescriptorTable | Gallery,
           images: Sequence[ImageLike], top_k: int = 10, rerank: bool = False, kind: str = "fmn",
           rerank_candidates: int = 100) -> pd.DataFrame:
    """The top-k gallery entries for each query image, as one DataFrame.

    Columns: ``query`` (its path, or its position for arrays), ``rank`` (1 = nearest), ``path``,
    ``pid``, ``camid``, ``distance``. ``model``: a checkpoint, an ONNX export or an extractor.
    """
    extractor = model if isinstance(model, FeatureExtractor) else FeatureExtractor(model, device="cpu")
    gallery = gallery if isinstance(gallery, Gallery) else Gallery.load(gallery, kind)
    if isinstance(images, (str, Path)):
        images = [images]
    descriptors = extractor(images, kind=kind)
    gallery.check_model(int(descriptors.shape[1]), extractor.model_hash)
    indices, distances = gallery.rank(descriptors, top_k, rerank, rerank_candidates)
    meta = gallery.table.meta
    rows = []
    for q, image in enumerate(images):
        label = str(image) if isinstance(image, (str, Path)) else f"#{q}"
        for rank, (index, distance) in enumerate(zip(indices[q], distances[q], strict=True), start=1):
            rows.append({"query": label, "rank": rank, "path": meta.path[index], "pid": int(meta.pid[index]),
                         "camid": int(meta.camid[index]), "distance": float(distance)})
    return pd.DataFrame(rows, columns=["query", "rank", "path", "pid", "camid", "distance"])
