"""Find unreadable images before they reach a training loop.

``header`` opens each file and parses its header (cheap: catches empty,
truncated-header and non-image files); ``decode`` decodes every pixel (catches
truncated JPEG bodies too, at the cost of a full decode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from PIL import Image, UnidentifiedImageError

from fmn_core.utils.errors import FMNInputError

ImageCheck = Literal["none", "header", "decode"]
CHECK_MODES: tuple[str, ...] = ("none", "header", "decode")


def _problem(path: str, mode: ImageCheck) -> str | None:
    try:
        with Image.open(path) as image:
            if image.width == 0 or image.height == 0:
                return "image has zero size"
            if image.mode == "F":
                return "floating-point samples (mode F): range unknown"
            if mode == "decode":
                image.load()
    except FileNotFoundError:
        return "file does not exist"
    except UnidentifiedImageError:
        return "not a recognised image format"
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely: {exc}"
    except (OSError, ValueError, SyntaxError) as exc:
        return f"cannot decode: {exc}"
    return None


def find_unreadable(paths: Sequence[str], mode: ImageCheck = "header",
                    workers: int | None = None) -> list[tuple[str, str]]:
    """Return ``(path, reason)`` for every path that fails the check."""
    if mode not in CHECK_MODES:
        raise FMNInputError(f"image check mode must be one of {CHECK_MODES}, got {mode!r}")
    if mode == "none" or not paths:
        return []
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(lambda p: _problem(p, mode), paths, chunksize=64))
    return [(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]
