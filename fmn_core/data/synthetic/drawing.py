"""Drawing primitives on float RGB arrays: rectangles, ellipses, quads, a blur."""

from __future__ import annotations

import math

import numpy as np

# All take float pixel coordinates; a pixel is painted when its centre lies inside.


def _rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, color: np.ndarray) -> None:
    height, width = img.shape[:2]
    i0, i1 = max(0, round(y0)), min(height, round(y1))
    j0, j1 = max(0, round(x0)), min(width, round(x1))
    if i0 < i1 and j0 < j1:
        img[i0:i1, j0:j1] = color


def _ellipse(img: np.ndarray, cy: float, cx: float, ry: float, rx: float, color: np.ndarray) -> None:
    height, width = img.shape[:2]
    i0, i1 = max(0, math.floor(cy - ry)), min(height, math.ceil(cy + ry))
    j0, j1 = max(0, math.floor(cx - rx)), min(width, math.ceil(cx + rx))
    if i0 >= i1 or j0 >= j1 or ry <= 0 or rx <= 0:
        return
    dy = ((np.arange(i0, i1, dtype=np.float32) + 0.5 - cy) / ry) ** 2
    dx = ((np.arange(j0, j1, dtype=np.float32) + 0.5 - cx) / rx) ** 2
    img[i0:i1, j0:j1][dy[:, None] + dx[None, :] <= 1.0] = color


def _quad(img: np.ndarray, y0: float, y1: float, xl0: float, xr0: float, xl1: float, xr1: float,
          color: np.ndarray) -> None:
    """A trapezoid with horizontal top (y0, xl0..xr0) and bottom (y1, xl1..xr1): limbs, torso, straps."""
    height, width = img.shape[:2]
    i0, i1 = max(0, round(y0)), min(height, round(y1))
    j0 = max(0, math.floor(min(xl0, xl1)))
    j1 = min(width, math.ceil(max(xr0, xr1)))
    if i0 >= i1 or j0 >= j1 or y1 <= y0:
        return
    t = (np.arange(i0, i1, dtype=np.float32) + 0.5 - y0) / (y1 - y0)
    left = (xl0 + t * (xl1 - xl0))[:, None]
    right = (xr0 + t * (xr1 - xr0))[:, None]
    xs = np.arange(j0, j1, dtype=np.float32)[None, :] + 0.5
    img[i0:i1, j0:j1][(xs >= left) & (xs < right)] = color


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] blur (edges replicated): softens aliased edges the way optics would."""
    v = img * np.float32(2)
    v[1:] += img[:-1]
    v[:-1] += img[1:]
    v[0] += img[0]
    v[-1] += img[-1]
    h = v * np.float32(2)
    h[:, 1:] += v[:, :-1]
    h[:, :-1] += v[:, 1:]
    h[:, 0] += v[:, 0]
    h[:, -1] += v[:, -1]
    h *= np.float32(1 / 16)
    return h
