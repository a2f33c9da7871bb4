"""Ranked lists like the paper's Figure 4: the query, then the top-k gallery images,
framed green for a true match and red for a false one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image

from fmn_core.viz._figure import save_figure

TRUE, FALSE, QUERY = "#1a9641", "#d7191c", "#2b83ba"


@dataclass
class RankedRow:
    """One line of the grid: a query and its ranked gallery."""

    label: str
    query_path: str
    gallery_paths: Sequence[str]
    correct: Sequence[bool]


def _show(axis, path: str, colour: str, caption: str) -> None:
    with Image.open(path) as image:
        axis.imshow(image.convert("RGB").resize((64, 128)))
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    axis.set_title(caption, fontsize=7, color=colour)


def plot_ranked_lists(rows: Sequence[RankedRow], path: str | Path, top_k: int = 10,
                      title: str = "ranked lists (green: true match, red: false)") -> Path:
    if not rows:
        raise ValueError("no ranked rows to draw")
    columns = top_k + 1
    figure, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.9, len(rows) * 1.9), squeeze=False)
    for r, row in enumerate(rows):
        _show(axes[r, 0], row.query_path, QUERY, "query")
        axes[r, 0].set_ylabel(row.label, fontsize=8, rotation=0, ha="right", va="center", labelpad=8)
        for c in range(top_k):
            axis = axes[r, c + 1]
            if c < len(row.gallery_paths):
                ok = bool(row.correct[c])
                _show(axis, row.gallery_paths[c], TRUE if ok else FALSE, f"{c + 1}")
            else:
                axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
