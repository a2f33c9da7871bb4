"""Per-camera profiles (gains, brightness, scale, usual view, background) and their backgrounds."""

from __future__ import annotations

from typing import Any

import numpy as np

from fmn_core.data.synthetic.config import _STREAM_CAMERA, SyntheticConfig, _rng
from fmn_core.data.synthetic.drawing import _rect
from fmn_core.data.synthetic.palettes import _jitter

# Hand-designed camera styles; each seed shuffles them over the cameras and jitters them.
_CAMERA_STYLES: tuple[dict[str, Any], ...] = (
    {"name": "sunny_plaza", "gains": (1.08, 1.02, 0.9), "brightness": 1.1, "contrast": 1.1, "scale": 0.9,
     "wall": (0.74, 0.71, 0.63), "ground": (0.56, 0.55, 0.5), "texture": "tiles", "horizon": 0.55,
     "blur": 0, "clutter": 1.5, "views": (0.55, 0.25, 0.1, 0.1)},
    {"name": "warm_indoor", "gains": (1.18, 0.96, 0.72), "brightness": 0.82, "contrast": 0.92, "scale": 0.8,
     "wall": (0.58, 0.46, 0.34), "ground": (0.36, 0.3, 0.24), "texture": "panels", "horizon": 0.65,
     "blur": 0, "clutter": 1.0, "views": (0.2, 0.6, 0.1, 0.1)},
    {"name": "blue_overcast", "gains": (0.84, 0.97, 1.2), "brightness": 0.96, "contrast": 1.0, "scale": 0.95,
     "wall": (0.6, 0.65, 0.72), "ground": (0.44, 0.46, 0.5), "texture": "glass", "horizon": 0.6,
     "blur": 0, "clutter": 1.2, "views": (0.15, 0.15, 0.35, 0.35)},
    {"name": "green_dim", "gains": (0.88, 1.12, 0.9), "brightness": 0.7, "contrast": 1.0, "scale": 0.74,
     "wall": (0.24, 0.44, 0.24), "ground": (0.42, 0.38, 0.33), "texture": "hedge", "horizon": 0.6,
     "blur": 1, "clutter": 2.0, "views": (0.4, 0.4, 0.1, 0.1)},
    {"name": "brick_contrast", "gains": (1.0, 0.98, 1.0), "brightness": 1.0, "contrast": 1.3, "scale": 0.86,
     "wall": (0.62, 0.3, 0.24), "ground": (0.5, 0.5, 0.5), "texture": "brick", "horizon": 0.62,
     "blur": 0, "clutter": 1.0, "views": (0.3, 0.3, 0.2, 0.2)},
    {"name": "hazy_washed", "gains": (0.98, 1.0, 1.06), "brightness": 1.16, "contrast": 0.68, "scale": 0.92,
     "wall": (0.84, 0.84, 0.84), "ground": (0.68, 0.68, 0.66), "texture": "stripes", "horizon": 0.5,
     "blur": 1, "clutter": 1.5, "views": (0.25, 0.25, 0.25, 0.25)},
)


def camera_profiles(config: SyntheticConfig) -> list[dict[str, Any]]:
    """Per-camera rendering profile (index 0 is camera 1), fixed by the seed."""
    rng = _rng(config.seed, _STREAM_CAMERA)
    order = rng.permutation(len(_CAMERA_STYLES))[: config.num_cameras]
    profiles = []
    for camera, style_index in enumerate(order, start=1):
        style = dict(_CAMERA_STYLES[int(style_index)])
        profiles.append({
            "camera": camera,
            "style": style["name"],
            "gains": [round(float(g * rng.uniform(0.97, 1.03)), 3) for g in style["gains"]],
            "brightness": round(float(style["brightness"] * rng.uniform(0.96, 1.04)), 3),
            "contrast": round(float(style["contrast"] * rng.uniform(0.96, 1.04)), 3),
            "scale": round(float(style["scale"] * rng.uniform(0.97, 1.03)), 3),
            "wall": _jitter(rng, style["wall"], 0.03),
            "ground": _jitter(rng, style["ground"], 0.03),
            "texture": style["texture"],
            "horizon": round(float(style["horizon"] + rng.uniform(-0.05, 0.05)), 3),
            "blur": int(style["blur"]),
            "clutter": float(style["clutter"]),
            "views": [float(v) for v in style["views"]],
            "popularity": round(float(rng.uniform(0.6, 1.4)), 3),
        })
    return profiles


def _camera_background(profile: dict[str, Any], height: int, width: int, seed: int) -> np.ndarray:
    """A static scene twice the crop width; each image crops a random window of it."""
    rng = _rng(seed, _STREAM_CAMERA, profile["camera"])
    wide = 2 * width
    bg = np.empty((height, wide, 3), np.float32)
    horizon = int(height * profile["horizon"])
    wall = np.asarray(profile["wall"], np.float32)
    ground = np.asarray(profile["ground"], np.float32)
    ys = (np.arange(height, dtype=np.float32) / height)[:, None, None]
    bg[:horizon] = wall * (1.06 - 0.12 * ys[:horizon])
    bg[horizon:] = ground * (0.88 + 0.2 * ys[horizon:])
    texture = profile["texture"]
    unit = max(2, height // 32)
    if texture == "tiles":
        for x in range(0, wide, 4 * unit):
            bg[horizon:, x:x + 1] *= 0.85
        y, step = horizon, unit
        while y < height:
            bg[y:y + 1] *= 0.85
            step += 1
            y += step
    elif texture == "panels":
        for x in range(0, wide, 6 * unit):
            bg[:horizon, x:x + 3 * unit] *= 0.88
            bg[:horizon, x:x + 1] *= 0.7
    elif texture == "glass":
        for x in range(unit, wide - 4 * unit, 7 * unit):
            for y in range(2 * unit, horizon - 6 * unit, 9 * unit):
                bg[y:y + 7 * unit, x:x + 5 * unit] = 0.25 * wall + np.float32(0.6) * np.asarray((0.7, 0.82, 0.95))
                bg[y:y + 7 * unit, x:x + 1] = wall * 0.5
    elif texture == "hedge":
        coarse = rng.uniform(0.65, 1.3, size=(horizon // unit + 1, wide // unit + 1, 1)).astype(np.float32)
        fine = np.repeat(np.repeat(coarse, unit, axis=0), unit, axis=1)[:horizon, :wide]
        bg[:horizon] *= fine
    elif texture == "brick":
        row = 2 * unit
        for i, y in enumerate(range(0, horizon, row)):
            bg[y:y + 1, :] = wall * 1.35
            offset = (i % 2) * 3 * unit
            for x in range(offset, wide, 6 * unit):
                bg[y:y + row, x:x + 1] = wall * 1.35
    elif texture == "stripes":
        for y in range(0, horizon, 4 * unit):
            bg[y:y + 2 * unit] *= 0.9
    for _ in range(int(rng.integers(2, 5))):  # doors, windows, bins, signs
        h = rng.uniform(0.12, 0.4) * height
        w = rng.uniform(0.1, 0.35) * width
        y0 = rng.uniform(0.05, 0.85) * height
        x0 = rng.uniform(0, wide - w)
        shade = wall * np.float32(rng.uniform(0.5, 0.8)) if rng.random() < 0.6 else rng.uniform(0.2, 0.8, 3)
        _rect(bg, y0, y0 + h, x0, x0 + w, np.asarray(shade, np.float32))
    return np.clip(bg, 0.0, 1.0)
