"""Saving matplotlib figures without a display and without half-written files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fmn_core.utils.atomic import atomic_write_path
from fmn_core.utils.output_guard import PICTURE_SOFTWARE


def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_write_path(path) as tmp:
        # the Software tag marks the file as fmn's own picture, which a later command may replace (output_guard)
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": PICTURE_SOFTWARE})
    plt.close(figure)
    return path
