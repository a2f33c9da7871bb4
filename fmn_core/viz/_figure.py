"""Saving matplotlib figures without a display and without half-written files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fmn_core.utils.atomic import atomic_write_path


def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_write_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path
