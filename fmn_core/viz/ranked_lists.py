"""Ranked lists like the paper's Figure 4: the query, then the top-k gallery images,
framed green for a true match and red for a false one (grey when the query's identity is unknown)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from fmn_core.data.loading import to_rgb
from fmn_core.retrieval.descriptors import DescriptorTable
from fmn_core.retrieval.distance import pairwise_distance
from fmn_core.utils.errors import FMNInputError
from fmn_core.viz._figure import save_figure

TRUE, FALSE, QUERY, UNKNOWN = "#1a9641", "#d7191c", "#2b83ba", "#7f7f7f"


@dataclass
class RankedRow:
    """One line of the grid: a query and its ranked gallery.

    ``correct[i]`` is None when it is not known (a search with an unlabelled query);
    ``captions`` replace the rank numbers under the gallery images.
    """

    label: str
    query_path: str | np.ndarray | Image.Image
    gallery_paths: Sequence[str]
    correct: Sequence[bool | None]
    captions: Sequence[str] | None = None


def figure4_rows(query: DescriptorTable, gallery: DescriptorTable, count: int, top: int = 10) -> list[RankedRow]:
    """The paper's Figure 4: queries whose first GRN answer is wrong and first FMN answer right, GRN row then FMN.

    When fewer than ``count`` queries qualify, the first other queries fill the rows. Gallery images of the
    query's identity under the query's camera are skipped, as the evaluation protocol skips them.
    """
    ranked = {}
    query_pids, gallery_pids = query.meta.pid.to_numpy(), gallery.meta.pid.to_numpy()
    for kind in ("grn", "fmn"):
        distances = pairwise_distance(query.features[kind], gallery.features[kind])
        junk = ((gallery_pids[None, :] == query_pids[:, None])
                & (gallery.meta.camid.to_numpy()[None, :] == query.meta.camid.to_numpy()[:, None]))
        distances[junk] = np.inf
        ranked[kind] = np.argsort(distances, axis=1, kind="stable")[:, :top]
    hits = {kind: gallery_pids[order] == query_pids[:, None] for kind, order in ranked.items()}
    chosen = list(np.flatnonzero(~hits["grn"][:, 0] & hits["fmn"][:, 0])[:count])
    chosen += [i for i in range(len(query)) if i not in chosen][: count - len(chosen)]
    rows = []
    for i in chosen:
        for kind in ("grn", "fmn"):
            rows.append(RankedRow(f"{kind.upper()}\npid {query.meta.pid[i]}", query.meta.path[i],
                                  gallery.meta.path.to_numpy()[ranked[kind][i]].tolist(), hits[kind][i].tolist()))
    return rows


def _show(axis, image_or_path, colour: str, caption: str) -> None:
    if isinstance(image_or_path, (str, Path)) and not Path(image_or_path).is_file():
        axis.text(0.5, 0.5, "image\nnot found", ha="center", va="center", fontsize=6, transform=axis.transAxes)
    elif isinstance(image_or_path, (str, Path)):
        with Image.open(image_or_path) as image:
            axis.imshow(to_rgb(image, image_or_path).resize((64, 128)))
    else:
        image = image_or_path if isinstance(image_or_path, Image.Image) else Image.fromarray(np.asarray(image_or_path))
        axis.imshow(to_rgb(image).resize((64, 128)))
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    axis.set_title(caption, fontsize=7, color=colour)


def plot_ranked_lists(rows: Sequence[RankedRow], path: str | Path, top_k: int = 10,
                      title: str = "ranked lists (green: true match, red: false)") -> Path:
    if not rows:
        raise FMNInputError("no ranked rows to draw")
    columns = top_k + 1
    figure, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.9, len(rows) * 1.9), squeeze=False)
    for r, row in enumerate(rows):
        _show(axes[r, 0], row.query_path, QUERY, "query")
        axes[r, 0].set_ylabel(row.label, fontsize=8, rotation=0, ha="right", va="center", labelpad=8)
        for c in range(top_k):
            axis = axes[r, c + 1]
            if c < len(row.gallery_paths):
                ok = row.correct[c]
                colour = UNKNOWN if ok is None else TRUE if ok else FALSE
                _show(axis, row.gallery_paths[c], colour, row.captions[c] if row.captions else f"{c + 1}")
            else:
                axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def plot_search_results(results: pd.DataFrame, queries: Sequence, path: str | Path, top_k: int = 10,
                        query_pids: Sequence[int | None] | None = None, title: str = "search results") -> Path:
    """One row per query image: the query, then its top-k gallery images from :func:`fmn_core.retrieval.search`.

    With ``query_pids`` the frames say whether each answer is the query's identity;
    without, they are grey and the captions give each answer's pid and distance.
    """
    labels = list(dict.fromkeys(results["query"]))
    if len(labels) != len(queries):
        raise FMNInputError(f"{len(queries)} query images for {len(labels)} queries in the results")
    rows = []
    for index, (label, image) in enumerate(zip(labels, queries, strict=True)):
        ranked = results[results["query"] == label].sort_values("rank").head(top_k)
        pid = query_pids[index] if query_pids is not None else None
        correct = [None if pid is None else int(p) == int(pid) for p in ranked["pid"]]
        captions = [f"{r}: pid {p}\n{d:.3f}" for r, p, d in zip(ranked["rank"], ranked["pid"], ranked["distance"],
                                                                  strict=True)]
        name = Path(label).name if isinstance(image, (str, Path)) else label
        rows.append(RankedRow(name, image, ranked["path"].tolist(), correct, captions))
    return plot_ranked_lists(rows, path, top_k=top_k, title=title)
