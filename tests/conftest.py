"""Shared fixtures: small real image files written to pytest's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No test may download weights; set in os.environ (not a fixture) so subprocesses the tests start inherit it.
os.environ["FMN_OFFLINE"] = "1"


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (128, 64), fmt: str | None = None) -> Path:
    """Write a small random RGB image (height, width) to ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def image_writer():
    return write_image
