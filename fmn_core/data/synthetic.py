"""A synthetic person re-identification dataset, written in the Market-1501 layout.

No real re-ID dataset can be downloaded here, so the demo and the tests use this
generator. It writes ``bounding_box_train/``, ``query/`` and
``bounding_box_test/`` with Market-1501 file names (``PPPP_cCsS_FFFFFF_BB.jpg``),
so the project's real Market-1501 reader reads it unchanged, plus a
``synthetic.json`` that records the configuration, every identity's attributes
and every image's rendering conditions.

The data is built to make the Feature Mask Network paper's point testable:
a global descriptor should not be enough.

* **Global appearance** (what a global branch sees): upper clothing colour,
  lower clothing colour and type (trousers, shorts, skirt), sleeve length, body
  height and build, skin tone, hair colour and length.
* **Local details** (what the mask-guided local branch must attend to): bag
  (backpack, handbag or shoulder bag; colour; which side it is carried on),
  shoe colour, chest logo (shape and colour), hat, belt, stripes on the sleeves.
* **Groups**: identities come in groups of ``group_size`` that share the global
  appearance *exactly* and differ only in local details (any two group mates
  differ in at least two local details). A purely global descriptor confuses
  group mates. Every group lies wholly in one split, and groups alternate
  between train and test, so training teaches that local details matter and
  the test gallery holds the confusers of every query.
* **Cameras** (per-camera profile, shuffled and jittered per seed): RGB gains,
  brightness and contrast (illumination and colour cast), person scale within
  the crop, the usual viewpoint (front, back or side: a chest logo is visible
  from the front only, a handbag shows on the side it is carried and swaps sides
  from the back, a backpack shows as straps from the front and as a box from the
  back or side, the side view is narrower), background (wall and ground colours
  and texture, plus random clutter shapes per image), blur and noise. Each
  identity passes each of its cameras in one direction, so most of its images
  there share one view (as in a tracklet) and a few show others.
* **Per image**: pose (leg stride, arm swing), scale and position jitter,
  brightness and colour jitter, sensor noise, JPEG quality; with
  ``occlusion_prob`` an occluder (pole, car, box, passer-by) covers part of the
  body, and with ``misalignment_prob`` the detector box is wrong (loose box with
  excess background, shifted or cut-off body, zoomed in). Query images are
  never misaligned, as Market-1501 queries are hand-drawn boxes.

Split and naming follow Market-1501: identities are split into disjoint halves
(train gets ``ceil(n / 2)``, test ``floor(n / 2)``); each test identity has one
query image per camera it appears in (at least two cameras, each with at least
two images, so every query has a gallery match under another camera); the
gallery holds the rest plus distractors (pid ``0000``: background-only or
partial-person crops) and junk boxes (pid ``-1``: mostly background or badly
misaligned crops).

Every image is drawn from its own random stream, derived from
``(seed, kind, pid, image index)``, so output is byte-identical whatever the
order or the number of worker processes. Generation goes to a temporary sibling
folder that is renamed into place at the end (see
:func:`fmn_core.utils.atomic.atomic_directory`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from fmn_core.utils.atomic import atomic_directory

#: Bump when the drawing changes, so a stored dataset from older code is not reused.
GENERATOR_VERSION = 1
METADATA_NAME = "synthetic.json"
SPLIT_FOLDERS: dict[str, str] = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
VIEWS: tuple[str, ...] = ("front", "back", "left", "right")

#: Vertical layout of a standing person, as fractions of the person box height
#: from its top (the box spans head top to shoe soles). Tests use it to find
#: body parts in the pixels of images whose person box ``synthetic.json`` records.
BODY_LAYOUT: dict[str, tuple[float, float]] = {
    "head": (0.0, 0.135),
    "torso": (0.15, 0.49),
    "chest_logo": (0.205, 0.295),
    "belly": (0.33, 0.44),
    "hips": (0.47, 0.58),
    "legs": (0.56, 0.935),
    "shoes": (0.925, 0.985),
}

# Random-stream tags: the first entries of every SeedSequence after the seed.
_STREAM_PLAN, _STREAM_CAMERA, _STREAM_PERSON, _STREAM_DISTRACTOR, _STREAM_JUNK = range(5)
_KIND_PERSON, _KIND_DISTRACTOR, _KIND_JUNK = "person", "distractor", "junk"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a synthetic dataset; equal configs give identical files.

    ``num_identities`` is split into ``ceil(n / 2)`` train and ``floor(n / 2)``
    test identities. ``images_per_identity`` is an average: each identity gets
    between half and one and a half times it (at least 2 per camera for test
    identities); test identities get ``test_images_factor`` times more, as in
    Market-1501 (17.2 images per train identity, 22 per test identity).
    ``distractor_fraction`` and ``junk_fraction`` are fractions of the final
    ``bounding_box_test`` folder, the way Market-1501's 14% distractors and 19%
    junk are usually quoted. ``occlusion_prob`` and ``misalignment_prob`` are
    per image (queries: half the occlusions, no misalignment); ``noise_std`` is
    the sensor noise as a fraction of the intensity range.
    """

    num_identities: int
    images_per_identity: int
    num_cameras: int = 6
    group_size: int = 4
    distractor_fraction: float = 0.06
    junk_fraction: float = 0.08
    image_height: int = 128
    image_width: int = 64
    seed: int = 0
    occlusion_prob: float = 0.12
    misalignment_prob: float = 0.15
    jpeg_quality: int = 92
    noise_std: float = 0.012
    test_images_factor: float = 1.0

    def __post_init__(self) -> None:
        # NumPy scalars (e.g. from a sweep) become Python numbers, so the config serialises to
        # JSON and 0 and 0.0 give the same synthetic.json.
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, np.generic):
                value = value.item()
            if spec.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            object.__setattr__(self, spec.name, value)
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(name: str, value: object, allowed: str) -> None:
    raise ValueError(f"SyntheticConfig.{name}={value!r} is not allowed: {allowed}")


def _check_int(config: SyntheticConfig, name: str, low: int, high: int, why: str = "") -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, f"must be an integer in {low}..{high}{why}")
    if not low <= value <= high:
        _fail(name, value, f"must be in {low}..{high}{why}")


def _check_fraction(config: SyntheticConfig, name: str, closed: bool) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        _fail(name, value, "must be a number in [0, 1" + ("]" if closed else ")"))
    if value < 0 or value > 1 or (value == 1 and not closed):
        _fail(name, value, "must be in [0, 1" + ("]" if closed else ")"))


def _validate(config: SyntheticConfig) -> None:
    """Reject values that would give a dataset the Market-1501 protocol cannot use."""
    _check_int(config, "num_identities", 4, 9999, " (at least 2 train and 2 test identities; pids have 4 digits)")
    _check_int(config, "images_per_identity", 4, 500,
               " (a test identity needs 2 cameras x 2 images: one query and one gallery image each)")
    _check_int(config, "num_cameras", 2, 6, " (Market-1501 has 6 cameras; re-ID needs at least 2)")
    _check_int(config, "group_size", 1, max(1, config.num_identities // 2),
               " (1 means no groups; a group lies in one split, which holds num_identities // 2 identities)")
    _check_fraction(config, "distractor_fraction", closed=False)
    _check_fraction(config, "junk_fraction", closed=False)
    if config.distractor_fraction + config.junk_fraction > 0.8:
        _fail("junk_fraction", config.junk_fraction,
              f"distractor_fraction + junk_fraction must be at most 0.8 "
              f"(got {config.distractor_fraction} + {config.junk_fraction})")
    _check_int(config, "image_height", 64, 1024, " pixels")
    _check_int(config, "image_width", 32, config.image_height, " pixels (a person crop is at most as wide as high)")
    _check_int(config, "seed", 0, 2**63 - 1)
    _check_fraction(config, "occlusion_prob", closed=True)
    _check_fraction(config, "misalignment_prob", closed=True)
    _check_int(config, "jpeg_quality", 40, 100)
    value = config.noise_std
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 0.2:
        _fail("noise_std", value, "must be a number in [0, 0.2] (fraction of the full intensity range)")
    value = config.test_images_factor
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 3:
        _fail("test_images_factor", value, "must be a number in [0.5, 3]")


PRESETS: dict[str, SyntheticConfig] = {
    # CI: 16 train / 16 test identities, ~330 images, well under a second.
    "tiny": SyntheticConfig(num_identities=32, images_per_identity=10, distractor_fraction=0.05, junk_fraction=0.08),
    # The CPU demo: ~2.8k images.
    "small": SyntheticConfig(num_identities=128, images_per_identity=20),
    "medium": SyntheticConfig(num_identities=500, images_per_identity=18, distractor_fraction=0.08,
                              junk_fraction=0.1),
    # Market-1501 sized: 751 train / 750 test identities, ~12.8k train, ~3.4k query, ~16k test files.
    "market": SyntheticConfig(num_identities=1501, images_per_identity=17, test_images_factor=1.25,
                              distractor_fraction=0.1, junk_fraction=0.12),
}


def resolve_config(config: SyntheticConfig | str) -> SyntheticConfig:
    """Accept a preset name or a config."""
    if isinstance(config, SyntheticConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown synthetic preset {config!r}; choose one of {sorted(PRESETS)} "
                             "or pass a SyntheticConfig")
        return PRESETS[config]
    raise TypeError(f"config must be a SyntheticConfig or a preset name, got {type(config).__name__}")


# --------------------------------------------------------------------------- palettes

_CLOTHING: dict[str, tuple[float, float, float]] = {
    "black": (0.09, 0.09, 0.1), "white": (0.9, 0.9, 0.88), "grey": (0.52, 0.52, 0.52),
    "charcoal": (0.27, 0.28, 0.3), "navy": (0.1, 0.14, 0.38), "blue": (0.16, 0.36, 0.78),
    "sky": (0.55, 0.72, 0.9), "denim": (0.25, 0.35, 0.55), "red": (0.78, 0.12, 0.12),
    "maroon": (0.48, 0.08, 0.12), "green": (0.16, 0.55, 0.22), "olive": (0.42, 0.44, 0.2),
    "yellow": (0.92, 0.8, 0.18), "orange": (0.93, 0.5, 0.12), "pink": (0.94, 0.6, 0.72),
    "purple": (0.44, 0.2, 0.58), "brown": (0.43, 0.28, 0.16), "beige": (0.8, 0.72, 0.56),
    "teal": (0.08, 0.5, 0.5),
}
_UPPER_NAMES = tuple(_CLOTHING)
_LOWER_WEIGHTS = {"black": 3, "denim": 3, "navy": 2, "charcoal": 2, "grey": 2, "beige": 2, "brown": 1, "white": 1,
                  "olive": 1, "blue": 1, "red": 0.5, "green": 0.5, "pink": 0.5}
_DETAIL: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.08, 0.08), "yellow": (0.98, 0.88, 0.08), "white": (0.97, 0.97, 0.97),
    "black": (0.04, 0.04, 0.04), "lime": (0.4, 0.92, 0.12), "cyan": (0.08, 0.82, 0.92),
    "magenta": (0.92, 0.12, 0.78), "orange": (1.0, 0.55, 0.04), "blue": (0.08, 0.22, 0.92),
    "brown": (0.5, 0.3, 0.1),
}
_SHOE_NAMES = ("black", "white", "brown", "red", "blue", "yellow", "lime", "cyan")
_SKIN: dict[str, tuple[float, float, float]] = {
    "light": (0.96, 0.8, 0.69), "fair": (0.88, 0.68, 0.55), "medium": (0.74, 0.54, 0.4),
    "tan": (0.58, 0.4, 0.28), "dark": (0.38, 0.26, 0.19),
}
_HAIR: dict[str, tuple[float, float, float]] = {
    "black": (0.06, 0.05, 0.05), "dark_brown": (0.22, 0.14, 0.08), "brown": (0.42, 0.27, 0.14),
    "blonde": (0.86, 0.73, 0.42), "grey": (0.64, 0.64, 0.64),
}
_BAGS = ("none", "backpack", "handbag", "shoulder")
_LOGOS = ("none", "circle", "square", "triangle", "diamond", "bar")


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(math.dist(a, b))


def _pick(rng: np.random.Generator, names: Sequence[str], weights: Sequence[float] | None = None) -> str:
    if weights is None:
        return names[int(rng.integers(len(names)))]
    p = np.asarray(weights, dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng: np.random.Generator, rgb: Sequence[float], sigma: float = 0.03) -> list[float]:
    values = np.clip(np.asarray(rgb) + rng.normal(0.0, sigma, 3), 0.02, 0.98)
    return [round(float(v), 3) for v in values]


def _sample_global(rng: np.random.Generator) -> dict[str, Any]:
    """One group's shared look: everything a global descriptor can see."""
    upper = _pick(rng, _UPPER_NAMES)
    lower_names = [n for n in _LOWER_WEIGHTS if n != upper]
    lower = _pick(rng, lower_names, [_LOWER_WEIGHTS[n] for n in lower_names])
    skin = _pick(rng, tuple(_SKIN))
    hair = _pick(rng, tuple(_HAIR), [4, 3, 2, 1, 1])
    return {
        "upper_color_name": upper, "upper_color": _jitter(rng, _CLOTHING[upper]),
        "lower_color_name": lower, "lower_color": _jitter(rng, _CLOTHING[lower]),
        "lower_type": _pick(rng, ("trousers", "shorts", "skirt"), [0.7, 0.15, 0.15]),
        "sleeves": _pick(rng, ("long", "short"), [0.6, 0.4]),
        "height": round(float(rng.uniform(0.88, 1.0)), 3),
        "build": round(float(rng.uniform(0.82, 1.22)), 3),
        "skin_name": skin, "skin_tone": list(_SKIN[skin]),
        "hair_name": hair, "hair_color": list(_HAIR[hair]),
        "hair_length": _pick(rng, ("short", "long"), [0.65, 0.35]),
    }


def _contrasting(rng: np.random.Generator, names: Sequence[str], *surfaces: Sequence[float]) -> str:
    """A detail colour that stands out from the clothes it is drawn on."""
    usable = [n for n in names if all(_distance(_DETAIL[n] if n in _DETAIL else _CLOTHING[n], s) > 0.4
                                      for s in surfaces)]
    return _pick(rng, usable or list(names))


def _sample_local(rng: np.random.Generator, look: dict[str, Any]) -> dict[str, Any]:
    """One identity's small details: what only a locally attentive descriptor sees."""
    upper, lower = look["upper_color"], look["lower_color"]
    details = tuple(_DETAIL)
    bag = _pick(rng, _BAGS, [0.3, 0.25, 0.22, 0.23])
    logo = _pick(rng, _LOGOS, [0.35, 0.13, 0.13, 0.13, 0.13, 0.13])
    return {
        "bag": bag,
        "bag_color": None if bag == "none" else _contrasting(rng, details, upper),
        "bag_side": _pick(rng, ("left", "right")) if bag in ("handbag", "shoulder") else None,
        "shoe_color": _contrasting(rng, _SHOE_NAMES, lower),
        "logo": logo,
        "logo_color": None if logo == "none" else _contrasting(rng, details, upper),
        "hat_color": _contrasting(rng, details, look["hair_color"]) if rng.random() < 0.3 else None,
        "belt_color": _contrasting(rng, details, upper, lower) if rng.random() < 0.3 else None,
        "stripe_color": _contrasting(rng, details, upper) if rng.random() < 0.25 else None,
    }


def _local_signature(local: dict[str, Any]) -> tuple:
    return ((local["bag"], local["bag_color"], local["bag_side"]), local["shoe_color"],
            (local["logo"], local["logo_color"]), local["hat_color"], local["belt_color"], local["stripe_color"])


def local_difference(a: dict[str, Any], b: dict[str, Any]) -> int:
    """How many local details (bag, shoes, logo, hat, belt, stripes) two identities differ in."""
    return sum(x != y for x, y in zip(_local_signature(a), _local_signature(b), strict=True))


# --------------------------------------------------------------------------- cameras

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


# --------------------------------------------------------------------------- drawing primitives
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


# --------------------------------------------------------------------------- people


class _Look:
    """One person's attributes as float32 colours, ready to draw."""

    def __init__(self, look: dict[str, Any], local: dict[str, Any]):
        def col(values: Sequence[float] | None) -> np.ndarray | None:
            return None if values is None else np.asarray(values, np.float32)

        def detail(name: str | None) -> np.ndarray | None:
            return None if name is None else np.asarray(_DETAIL.get(name, _CLOTHING.get(name)), np.float32)

        self.upper = col(look["upper_color"])
        self.lower = col(look["lower_color"])
        self.skin = col(look["skin_tone"])
        self.hair = col(look["hair_color"])
        self.lower_type = look["lower_type"]
        self.long_sleeves = look["sleeves"] == "long"
        self.long_hair = look["hair_length"] == "long"
        self.height = float(look["height"])
        self.build = float(look["build"])
        self.bag = local["bag"]
        self.bag_color = detail(local["bag_color"])
        self.bag_side = local["bag_side"]
        self.shoes = detail(local["shoe_color"])
        self.logo = local["logo"]
        self.logo_color = detail(local["logo_color"])
        self.hat = detail(local["hat_color"])
        self.belt = detail(local["belt_color"])
        self.stripes = detail(local["stripe_color"])


def _draw_logo(img: np.ndarray, shape: str, cy: float, cx: float, s: float, color: np.ndarray) -> None:
    if shape == "circle":
        _ellipse(img, cy, cx, s, s, color)
    elif shape == "square":
        _rect(img, cy - s, cy + s, cx - s, cx + s, color)
    elif shape == "triangle":
        _quad(img, cy - s, cy + s, cx, cx, cx - 1.2 * s, cx + 1.2 * s, color)
    elif shape == "diamond":
        _quad(img, cy - 1.2 * s, cy, cx, cx, cx - s, cx + s, color)
        _quad(img, cy, cy + 1.2 * s, cx - s, cx + s, cx, cx, color)
    elif shape == "bar":
        _rect(img, cy - 0.45 * s, cy + 0.45 * s, cx - 2.2 * s, cx + 2.2 * s, color)


def _draw_person(img: np.ndarray, p: _Look, view: str, top: float, cx: float, hp: float,
                 rng: np.random.Generator) -> None:
    """Paint a standing person whose box is ``hp`` high from ``top``, centred on ``cx``."""
    if view in ("left", "right"):
        _draw_side(img, p, 1.0 if view == "right" else -1.0, top, cx, hp, rng)
    else:
        _draw_frontal(img, p, view == "front", top, cx, hp, rng)


def _legs_and_hips(img: np.ndarray, p: _Look, top: float, hp: float, feet: list[tuple[float, float, float]],
                   hip_left: float, hip_right: float, foot_forward: float) -> None:
    """Legs from hip to feet, shoes, hips/skirt; ``feet`` = (hip x, foot x, shade) per leg, back leg first."""
    b = p.build
    lw = 0.047 * b * hp
    y_hip, y_foot = top + 0.56 * hp, top + 0.935 * hp
    for hip_x, foot_x, shade in feet:
        leg = p.lower if p.lower_type == "trousers" else p.skin
        _quad(img, y_hip, y_foot, hip_x - lw, hip_x + lw, foot_x - 0.85 * lw, foot_x + 0.85 * lw, leg * shade)
        if p.lower_type == "shorts":
            y_knee = top + 0.7 * hp
            knee_x = hip_x + (foot_x - hip_x) * 0.37
            _quad(img, y_hip, y_knee, hip_x - 1.1 * lw, hip_x + 1.1 * lw, knee_x - 1.1 * lw, knee_x + 1.1 * lw,
                  p.lower * shade)
        _ellipse(img, top + 0.955 * hp, foot_x + foot_forward, 0.03 * hp, 1.2 * lw + abs(foot_forward),
                 p.shoes * shade)
    if p.lower_type == "skirt":
        half = (hip_right - hip_left) / 2
        mid = (hip_right + hip_left) / 2
        _quad(img, top + 0.47 * hp, top + 0.73 * hp, hip_left, hip_right, mid - 1.55 * half, mid + 1.55 * half,
              p.lower)
    else:
        _rect(img, top + 0.47 * hp, top + 0.585 * hp, hip_left, hip_right, p.lower)


def _hand_bag(img: np.ndarray, p: _Look, top: float, hp: float, x: float) -> None:
    dark = p.bag_color * 0.7
    if p.bag == "handbag":
        _rect(img, top + 0.43 * hp, top + 0.47 * hp, x - 0.025 * hp, x + 0.025 * hp, dark)
        _rect(img, top + 0.465 * hp, top + 0.6 * hp, x - 0.05 * hp, x + 0.05 * hp, p.bag_color)
    else:
        _rect(img, top + 0.42 * hp, top + 0.55 * hp, x - 0.065 * hp, x + 0.065 * hp, p.bag_color)
        _rect(img, top + 0.42 * hp, top + 0.45 * hp, x - 0.065 * hp, x + 0.065 * hp, dark)


def _draw_frontal(img: np.ndarray, p: _Look, front: bool, top: float, cx: float, hp: float,
                  rng: np.random.Generator) -> None:
    b = p.build
    sw, ww, aw = 0.125 * b * hp, 0.105 * b * hp, 0.042 * b * hp
    spread = rng.uniform(-0.01, 0.035) * hp
    swing = rng.uniform(-0.02, 0.02, 2) * hp
    leg_x = 0.055 * b * hp
    _legs_and_hips(img, p, top, hp, [(cx - leg_x, cx - leg_x - spread, 1.0), (cx + leg_x, cx + leg_x + spread, 1.0)],
                   cx - ww, cx + ww, 0.0)
    y_sh, y_waist = top + 0.15 * hp, top + 0.49 * hp
    _quad(img, y_sh, y_waist, cx - sw, cx + sw, cx - ww, cx + ww, p.upper)
    _ellipse(img, y_sh + 0.03 * hp, cx - sw + 0.02 * hp, 0.035 * hp, 0.04 * hp, p.upper)
    _ellipse(img, y_sh + 0.03 * hp, cx + sw - 0.02 * hp, 0.035 * hp, 0.04 * hp, p.upper)
    y_arm0, y_arm1 = top + 0.16 * hp, top + 0.46 * hp
    y_sleeve = y_arm1 if p.long_sleeves else top + 0.27 * hp
    for sign, dx in ((-1.0, swing[0]), (1.0, swing[1])):
        x_in = cx + sign * (sw - 0.2 * aw)
        x_out = cx + sign * (sw + 0.8 * aw)
        lo, hi = min(x_in, x_out), max(x_in, x_out)
        if not p.long_sleeves:
            _quad(img, y_arm0, y_arm1, lo, hi, lo + dx, hi + dx, p.skin)
        t = (y_sleeve - y_arm0) / (y_arm1 - y_arm0)
        _quad(img, y_arm0, y_sleeve, lo, hi, lo + t * dx, hi + t * dx, p.upper * 0.9)  # shaded apart from the torso
        if p.stripes is not None:
            ys = top + (0.3 if p.long_sleeves else 0.225) * hp
            ts = (ys - y_arm0) / (y_arm1 - y_arm0)
            _rect(img, ys, ys + 0.028 * hp, lo + ts * dx, hi + ts * dx, p.stripes)
        _ellipse(img, y_arm1 + 0.015 * hp, (lo + hi) / 2 + dx, 0.025 * hp, 0.6 * aw, p.skin)
    if p.belt is not None:
        _rect(img, top + 0.47 * hp, top + 0.497 * hp, cx - ww, cx + ww, p.belt)
    if front and p.logo != "none":
        _draw_logo(img, p.logo, top + 0.25 * hp, cx, 0.04 * hp, p.logo_color)
    if p.bag != "none":
        if p.bag == "backpack":
            if front:
                for sign in (-1.0, 1.0):
                    x = cx + sign * 0.075 * b * hp
                    _rect(img, y_sh, top + 0.36 * hp, x - 0.011 * hp, x + 0.011 * hp, p.bag_color)
            else:
                half = 0.095 * b * hp
                _ellipse(img, top + 0.2 * hp, cx, 0.04 * hp, half, p.bag_color)
                _rect(img, top + 0.2 * hp, top + 0.43 * hp, cx - half, cx + half, p.bag_color)
                _rect(img, top + 0.33 * hp, top + 0.41 * hp, cx - 0.65 * half, cx + 0.65 * half, p.bag_color * 0.7)
        else:
            # A person's right side is on the image's left from the front and on its right from the back.
            side = (-1.0 if p.bag_side == "right" else 1.0) * (1.0 if front else -1.0)
            if p.bag == "shoulder":
                x0, x1 = cx - side * 0.09 * b * hp, cx + side * 0.1 * b * hp
                t = 0.012 * hp
                _quad(img, y_sh, top + 0.44 * hp, x0 - t, x0 + t, x1 - t, x1 + t, p.bag_color * 0.8)
                _hand_bag(img, p, top, hp, cx + side * (ww + 0.02 * hp))
            else:
                _hand_bag(img, p, top, hp, cx + side * (sw + 0.5 * aw) + swing[0 if side < 0 else 1])
    head_y, head_x = top + 0.07 * hp, cx + rng.uniform(-0.006, 0.006) * hp
    if p.long_hair and front:  # falls behind the neck onto the shoulders
        _rect(img, head_y, top + 0.19 * hp, head_x - 0.054 * hp, head_x + 0.054 * hp, p.hair)
    _rect(img, top + 0.12 * hp, top + 0.16 * hp, cx - 0.024 * hp, cx + 0.024 * hp, p.skin)
    if p.long_hair and not front:
        _rect(img, head_y, top + 0.22 * hp, head_x - 0.054 * hp, head_x + 0.054 * hp, p.hair)
    _ellipse(img, head_y, head_x, 0.064 * hp, 0.053 * hp, p.hair)
    if front:
        _ellipse(img, head_y + 0.016 * hp, head_x, 0.052 * hp, 0.045 * hp, p.skin)
    if p.hat is not None:
        _ellipse(img, top + 0.035 * hp, head_x, 0.036 * hp, 0.057 * hp, p.hat)
        if front:
            _rect(img, top + 0.052 * hp, top + 0.068 * hp, head_x - 0.062 * hp, head_x + 0.062 * hp, p.hat * 0.75)


def _draw_side(img: np.ndarray, p: _Look, f: float, top: float, cx: float, hp: float,
               rng: np.random.Generator) -> None:
    """Side view facing ``f`` (-1 image-left, +1 image-right): narrower, no logo, one bag side visible."""
    b = p.build
    hw_sh, hw_w = 0.078 * b * hp, 0.07 * b * hp
    stride = rng.uniform(0.01, 0.1) * hp
    swing = rng.uniform(-0.07, 0.07) * hp
    # Facing image-left shows the person's left side, facing image-right their right side.
    visible = "left" if f < 0 else "right"
    carried_bag = p.bag in ("handbag", "shoulder")
    if carried_bag and p.bag_side != visible:
        _hand_bag(img, p, top, hp, cx - f * 0.07 * hp)  # behind the body: partly hidden
    _legs_and_hips(img, p, top, hp, [(cx, cx - f * stride, 0.8), (cx, cx + f * stride, 1.0)],
                   cx - hw_w, cx + hw_w, f * 0.02 * hp)
    y_sh, y_waist = top + 0.15 * hp, top + 0.49 * hp
    _quad(img, y_sh, y_waist, cx - hw_sh, cx + hw_sh, cx - hw_w, cx + hw_w, p.upper)
    _ellipse(img, top + 0.3 * hp, cx + f * 0.035 * hp, 0.09 * hp, 0.06 * b * hp, p.upper)  # chest
    if p.bag == "backpack":
        x_back = cx - f * 0.055 * b * hp
        x_far = x_back - f * 0.1 * hp
        _rect(img, top + 0.17 * hp, top + 0.43 * hp, min(x_back, x_far), max(x_back, x_far), p.bag_color)
    if p.belt is not None:
        _rect(img, top + 0.47 * hp, top + 0.497 * hp, cx - hw_w, cx + hw_w, p.belt)
    if p.bag == "shoulder":
        t = 0.012 * hp
        _quad(img, y_sh, top + 0.44 * hp, cx - t, cx + t, cx + f * 0.02 * hp - t, cx + f * 0.02 * hp + t,
              p.bag_color * 0.8)
    aw = 0.04 * b * hp
    y_arm0, y_arm1 = top + 0.16 * hp, top + 0.46 * hp
    y_sleeve = y_arm1 if p.long_sleeves else top + 0.27 * hp
    arm = p.upper * 0.85
    if not p.long_sleeves:
        _quad(img, y_arm0, y_arm1, cx - aw, cx + aw, cx - aw + swing, cx + aw + swing, p.skin)
    t = (y_sleeve - y_arm0) / (y_arm1 - y_arm0)
    _quad(img, y_arm0, y_sleeve, cx - aw, cx + aw, cx - aw + t * swing, cx + aw + t * swing, arm)
    if p.stripes is not None:
        ys = top + (0.3 if p.long_sleeves else 0.225) * hp
        ts = (ys - y_arm0) / (y_arm1 - y_arm0)
        _rect(img, ys, ys + 0.028 * hp, cx - aw + ts * swing, cx + aw + ts * swing, p.stripes)
    _ellipse(img, y_arm1 + 0.015 * hp, cx + swing, 0.025 * hp, 0.6 * aw, p.skin)
    if carried_bag and p.bag_side == visible:
        _hand_bag(img, p, top, hp, cx + swing * 0.5 if p.bag == "handbag" else cx + f * 0.01 * hp)
    _rect(img, top + 0.12 * hp, top + 0.16 * hp, cx - 0.022 * hp, cx + 0.022 * hp, p.skin)
    head_y = top + 0.07 * hp
    if p.long_hair:
        x0, x1 = cx - f * 0.05 * hp, cx + f * 0.005 * hp
        _rect(img, head_y, top + 0.2 * hp, min(x0, x1), max(x0, x1), p.hair)
    _ellipse(img, head_y, cx - f * 0.004 * hp, 0.064 * hp, 0.05 * hp, p.hair)
    _ellipse(img, head_y + 0.014 * hp, cx + f * 0.014 * hp, 0.052 * hp, 0.036 * hp, p.skin)
    if p.hat is not None:
        _ellipse(img, top + 0.035 * hp, cx, 0.036 * hp, 0.054 * hp, p.hat)
        x1 = cx + f * 0.09 * hp
        _rect(img, top + 0.052 * hp, top + 0.068 * hp, min(cx, x1), max(cx, x1), p.hat * 0.75)


# --------------------------------------------------------------------------- plan


class _Job(NamedTuple):
    """One image to render; everything a worker needs besides the identity table."""

    kind: str
    pid: int
    index: int
    split: str
    camera: int
    seq: int
    frame: int
    box: int
    view: str

    @property
    def filename(self) -> str:
        pid = "-1" if self.pid < 0 else f"{self.pid:04d}"
        return f"{pid}_c{self.camera}s{self.seq}_{self.frame:06d}_{self.box:02d}.jpg"

    @property
    def folder(self) -> str:
        return SPLIT_FOLDERS[self.split]


@dataclass
class _Plan:
    identities: list[dict[str, Any]]
    jobs: list[_Job]


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(e) for e in entropy])))


def _extra_count(fraction: float, gallery: int, config: SyntheticConfig) -> int:
    """Images of one extra kind so it makes up ``fraction`` of the final gallery folder."""
    if fraction <= 0:
        return 0
    rest = 1.0 - config.distractor_fraction - config.junk_fraction
    return max(1, round(fraction * gallery / rest))


def _make_plan(config: SyntheticConfig, cameras: list[dict[str, Any]]) -> _Plan:
    """Decide identities, groups, splits, cameras and file names; no pixels yet."""
    rng = _rng(config.seed, _STREAM_PLAN)
    n_train = (config.num_identities + 1) // 2
    n_test = config.num_identities - n_train

    def group_sizes(count: int) -> list[int]:
        full, rest = divmod(count, config.group_size)
        return [config.group_size] * full + ([rest] if rest else [])

    train_groups, test_groups = group_sizes(n_train), group_sizes(n_test)
    order: list[tuple[str, int]] = []
    for i in range(max(len(train_groups), len(test_groups))):
        order += [("train", train_groups[i])] if i < len(train_groups) else []
        order += [("test", test_groups[i])] if i < len(test_groups) else []
    pids = rng.permutation(config.num_identities) + 1  # group mates are not neighbours in pid order

    identities: list[dict[str, Any]] = []
    for group, (split, size) in enumerate(order):
        look = _sample_global(rng)
        locals_: list[dict[str, Any]] = []
        for _ in range(size):
            for _attempt in range(100):
                local = _sample_local(rng, look)
                if all(local_difference(local, other) >= 2 for other in locals_):
                    break
            locals_.append(local)
            identities.append({"pid": int(pids[len(identities)]), "group": group, "split": split,
                               "global": look, "local": local})

    popularity = np.asarray([c["popularity"] for c in cameras], float)
    num_cameras = config.num_cameras
    jobs: list[_Job] = []
    for ident in identities:
        test = ident["split"] == "test"
        per_camera = 2 if test else 1
        average = config.images_per_identity * (config.test_images_factor if test else 1.0)
        n_images = max(2 * per_camera, round(average * rng.uniform(0.5, 1.5)))
        k = min(num_cameras, n_images // per_camera, 2 + int(rng.binomial(num_cameras - 2, 0.6)))
        chosen = np.sort(rng.choice(num_cameras, size=k, replace=False, p=popularity / popularity.sum()))
        weights = popularity[chosen] / popularity[chosen].sum()
        counts = per_camera + rng.multinomial(n_images - per_camera * k, weights)
        index = 0
        ident["cameras"] = [int(c) + 1 for c in chosen]
        ident["images"] = {"train": 0, "query": 0, "gallery": 0}
        for cam_index, count in zip(chosen, counts, strict=True):
            profile = cameras[int(cam_index)]
            camera = int(cam_index) + 1
            seq = int(rng.integers(1, 7))
            frame = int(rng.integers(1, 999_999 - 60 * int(count)))  # frames must keep 6 digits
            view = VIEWS[int(rng.choice(4, p=np.asarray(profile["views"]) / sum(profile["views"])))]
            query_at = int(rng.integers(count)) if test else -1
            for j in range(int(count)):
                frame += int(rng.integers(4, 60))
                box = 1 if rng.random() < 0.75 else int(rng.integers(2, 6))
                split = "train" if not test else ("query" if j == query_at else "gallery")
                jobs.append(_Job(_KIND_PERSON, ident["pid"], index, split, camera, seq, frame, box, view))
                ident["images"][split] += 1
                index += 1

    gallery = sum(job.split == "gallery" for job in jobs)
    for kind, fraction in ((_KIND_DISTRACTOR, config.distractor_fraction), (_KIND_JUNK, config.junk_fraction)):
        total = _extra_count(fraction, gallery, config)
        extra_cameras = rng.integers(num_cameras, size=total)
        frames = np.zeros(total, np.int64)
        for camera in range(num_cameras):  # distinct frames per camera keep the names unique
            where = np.flatnonzero(extra_cameras == camera)
            frames[where] = np.sort(rng.choice(999_999, size=where.size, replace=False)) + 1
        for index in range(total):
            jobs.append(_Job(kind, 0 if kind == _KIND_DISTRACTOR else -1, index, "gallery",
                             int(extra_cameras[index]) + 1, int(rng.integers(1, 7)), int(frames[index]),
                             int(rng.integers(1, 9)), ""))
    names = [job.filename for job in jobs]
    if len(set(names)) != len(names):  # cannot happen by construction; never write two images to one name
        raise RuntimeError("synthetic plan produced duplicate file names")
    identities.sort(key=lambda item: item["pid"])
    return _Plan(identities, jobs)


# --------------------------------------------------------------------------- rendering

IMAGE_COLUMNS: tuple[str, ...] = ("filename", "split", "pid", "camera", "view", "occluder", "misalignment",
                                  "box_top", "box_left", "box_height", "box_width")


class _Renderer:
    """Draws jobs; holds the per-camera backgrounds and the identities' looks."""

    def __init__(self, config: SyntheticConfig, identities: list[dict[str, Any]]):
        self.config = config
        self.cameras = camera_profiles(config)
        self.backgrounds = [_camera_background(c, config.image_height, config.image_width, config.seed)
                            for c in self.cameras]
        self.looks = {ident["pid"]: _Look(ident["global"], ident["local"]) for ident in identities}
        # Sensor noise: one seeded field twice the crop size, cut at a random offset per image
        # (drawing fresh Gaussian noise per image would cost more than all the drawing).
        noise_rng = _rng(config.seed, _STREAM_CAMERA, 1000)
        shape = (2 * config.image_height, 2 * config.image_width, 3)
        self.noise = noise_rng.standard_normal(shape, dtype=np.float32) * np.float32(config.noise_std)

    def render(self, job: _Job) -> tuple[np.ndarray, int, list[Any]]:
        """Pixels (uint8, H x W x 3), JPEG quality and the image's metadata row."""
        cfg = self.config
        height, width = cfg.image_height, cfg.image_width
        stream = {_KIND_PERSON: _STREAM_PERSON, _KIND_DISTRACTOR: _STREAM_DISTRACTOR, _KIND_JUNK: _STREAM_JUNK}
        rng = _rng(cfg.seed, stream[job.kind], max(job.pid, 0), job.index)
        profile = self.cameras[job.camera - 1]
        img = self._background(rng, job.camera, extra_clutter=1.0 if job.kind != _KIND_PERSON else 0.0)
        view, occluder, misalignment = job.view, "", ""
        box = (0.0, 0.0, 0.0, 0.0)
        if job.kind == _KIND_PERSON:
            look = self.looks[job.pid]
            if rng.random() >= 0.8:
                view = VIEWS[int(rng.integers(4))]
            hp = height * profile["scale"] * look.height * rng.uniform(0.96, 1.04)
            cx = width / 2 + rng.normal(0, 0.015 * width)
            top = (height - hp) / 2 + rng.normal(0, 0.012 * height)
            if job.split != "query" and rng.random() < cfg.misalignment_prob:
                misalignment, top, cx, hp = self._misalign(rng, top, cx, hp)
            _draw_person(img, look, view, top, cx, hp, rng)
            occlusion_prob = cfg.occlusion_prob * (0.5 if job.split == "query" else 1.0)
            if rng.random() < occlusion_prob:
                occluder = self._occlude(rng, img)
            box = (top, cx - 0.2 * look.build * hp * (0.6 if view in ("left", "right") else 1.0), hp,
                   0.4 * look.build * hp * (0.6 if view in ("left", "right") else 1.0))
        else:
            view = ""
            misalignment = self._extra(rng, img, job.kind)
        pixels = self._camera_transform(rng, img, profile)
        quality = max(30, cfg.jpeg_quality - int(rng.integers(0, 11)))
        row = [job.filename, job.split, job.pid, job.camera, view, occluder, misalignment,
               *(round(float(v), 1) for v in box)]
        return pixels, quality, row

    def _background(self, rng: np.random.Generator, camera: int, extra_clutter: float) -> np.ndarray:
        height, width = self.config.image_height, self.config.image_width
        offset = int(rng.integers(0, width + 1))
        img = self.backgrounds[camera - 1][:, offset:offset + width].copy()
        for _ in range(int(rng.poisson(self.cameras[camera - 1]["clutter"] + extra_clutter))):
            h, w = rng.uniform(0.03, 0.2) * height, rng.uniform(0.08, 0.4) * width
            y, x = rng.uniform(-0.05, 1.0) * height, rng.uniform(-0.2, 1.0) * width
            color = rng.uniform(0.1, 0.9, 3).astype(np.float32)
            if rng.random() < 0.5:
                _rect(img, y, y + h, x, x + w, color)
            else:
                _ellipse(img, y, x, h / 2, w / 2, color)
        return img

    def _misalign(self, rng: np.random.Generator, top: float, cx: float, hp: float) -> tuple[str, float, float, float]:
        """A detector's mistake: returns (mode, top, cx, hp)."""
        height, width = self.config.image_height, self.config.image_width
        mode = ("loose", "shift", "cut_top", "cut_bottom", "zoom")[int(rng.integers(5))]
        if mode == "loose":  # excess background around a small person
            hp *= rng.uniform(0.55, 0.75)
            top = rng.uniform(0.0, height - hp)
            cx = rng.uniform(0.3, 0.7) * width
        elif mode == "shift":  # box off to one side: part of the body cut off
            cx += rng.choice((-1.0, 1.0)) * rng.uniform(0.18, 0.32) * width
        elif mode == "cut_top":
            top -= rng.uniform(0.1, 0.25) * hp
        elif mode == "cut_bottom":
            top += rng.uniform(0.1, 0.25) * hp
        else:  # box too tight: the person overflows the crop
            grown = hp * rng.uniform(1.15, 1.35)
            top -= (grown - hp) * rng.uniform(0.2, 0.6)
            hp = grown
        return mode, top, cx, hp

    def _occlude(self, rng: np.random.Generator, img: np.ndarray) -> str:
        height, width = img.shape[:2]
        kind = ("pole", "car", "box", "passerby")[int(rng.integers(4))]
        if kind == "pole":
            w = rng.uniform(0.06, 0.14) * width
            x = rng.uniform(0.15, 0.85) * width - w / 2
            grey = np.float32(rng.uniform(0.15, 0.6))
            _rect(img, 0, height, x, x + w, np.asarray((grey, grey, grey * 1.05), np.float32))
            if rng.random() < 0.5:  # a sign on the pole
                _rect(img, rng.uniform(0.05, 0.3) * height, rng.uniform(0.35, 0.45) * height, x - w, x + 2 * w,
                      rng.uniform(0.2, 0.95, 3).astype(np.float32))
        elif kind == "car":
            y = rng.uniform(0.58, 0.78) * height
            x0, x1 = sorted(rng.uniform(-0.4, 1.4, 2) * width)
            x0, x1 = min(x0, 0.2 * width), max(x1, 0.8 * width)
            body = rng.uniform(0.1, 0.9, 3).astype(np.float32)
            _ellipse(img, y + 0.04 * height, (x0 + x1) / 2, 0.08 * height, (x1 - x0) / 2, body)
            _rect(img, y + 0.04 * height, height, x0, x1, body)
            _rect(img, y + 0.02 * height, y + 0.06 * height, x0 + 0.1 * width, x1 - 0.1 * width, body * 0.35)
            for wx in (x0 + 0.2 * width, x1 - 0.2 * width):
                _ellipse(img, height, wx, 0.07 * height, 0.12 * width, np.full(3, 0.06, np.float32))
        elif kind == "box":
            h, w = rng.uniform(0.15, 0.3) * height, rng.uniform(0.35, 0.7) * width
            y, x = rng.uniform(0.3, 0.85) * height, rng.uniform(-0.1, 0.7) * width
            color = rng.uniform(0.15, 0.85, 3).astype(np.float32)
            _rect(img, y, y + h, x, x + w, color)
            _rect(img, y, y + 0.1 * h, x, x + w, color * 0.7)
        else:  # another pedestrian passing close to the camera
            side = rng.choice((-1.0, 1.0))
            cx = width / 2 + side * rng.uniform(0.45, 0.7) * width
            _rect(img, 0.12 * height, 0.62 * height, cx - 0.3 * width, cx + 0.3 * width,
                  rng.uniform(0.1, 0.9, 3).astype(np.float32))
            _rect(img, 0.6 * height, height, cx - 0.22 * width, cx + 0.22 * width,
                  rng.uniform(0.05, 0.6, 3).astype(np.float32))
            _ellipse(img, 0.06 * height, cx, 0.07 * height, 0.16 * width, np.asarray(_HAIR["black"], np.float32))
        return kind

    def _extra(self, rng: np.random.Generator, img: np.ndarray, kind: str) -> str:
        """Distractors (background or a partial stranger) and junk (mostly background, badly framed)."""
        height, width = img.shape[:2]
        roll = rng.random()
        if (kind == _KIND_DISTRACTOR and roll < 0.5) or (kind == _KIND_JUNK and roll < 0.2):
            return "background"
        stranger = _sample_global(rng)
        look = _Look(stranger, _sample_local(rng, stranger))
        view = VIEWS[int(rng.integers(4))]
        if kind == _KIND_DISTRACTOR:  # a stranger's body part: half a person, or legs only
            hp = height * rng.uniform(0.9, 1.4)
            if rng.random() < 0.5:
                shift = rng.choice((-1.0, 1.0)) * rng.uniform(0.4, 0.6) * width
                top, cx, mode = (height - hp) / 2, width / 2 + shift, "partial_side"
            else:
                top, cx, mode = -rng.uniform(0.45, 0.6) * hp, width / 2, "partial_legs"
        elif roll < 0.6:  # tiny person in a box that is mostly background
            hp = height * rng.uniform(0.22, 0.42)
            top, cx, mode = rng.uniform(0, height - hp), rng.uniform(0.2, 0.8) * width, "tiny"
        else:  # box barely touching the person
            hp = height * rng.uniform(0.8, 1.0)
            top = (height - hp) / 2 + rng.uniform(-0.3, 0.3) * hp
            cx, mode = width / 2 + rng.choice((-1.0, 1.0)) * rng.uniform(0.45, 0.65) * width, "edge"
        _draw_person(img, look, view, top, cx, hp, rng)
        return mode

    def _camera_transform(self, rng: np.random.Generator, img: np.ndarray, profile: dict[str, Any]) -> np.ndarray:
        """Camera colour cast, exposure, contrast, optics blur and sensor noise."""
        gains = np.asarray(profile["gains"], np.float32) * np.float32(profile["brightness"] * rng.uniform(0.92, 1.08))
        gains *= (1.0 + rng.normal(0, 0.015, 3)).astype(np.float32)
        out = _blur(img)
        for _ in range(profile["blur"]):
            out = _blur(out)
        out *= gains
        contrast = np.float32(profile["contrast"])
        if contrast != 1:
            out -= np.float32(0.45)
            out *= contrast
            out += np.float32(0.45)
        if self.config.noise_std > 0:
            height, width = img.shape[:2]
            oy, ox = rng.integers(0, height + 1), rng.integers(0, width + 1)
            out += self.noise[oy:oy + height, ox:ox + width]
        np.clip(out, 0.0, 1.0, out=out)
        out *= np.float32(255.0)
        out += np.float32(0.5)
        return out.astype(np.uint8)


def _write_jpeg(path: Path, pixels: np.ndarray, quality: int) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)


def _render_jobs(renderer: _Renderer, jobs: Sequence[_Job], out_dir: Path) -> list[list[Any]]:
    rows = []
    for job in jobs:
        pixels, quality, row = renderer.render(job)
        _write_jpeg(out_dir / job.folder / job.filename, pixels, quality)
        rows.append(row)
    return rows


_WORKER_RENDERER: _Renderer | None = None


def _init_worker(config: SyntheticConfig, identities: list[dict[str, Any]]) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = _Renderer(config, identities)


def _work(task: tuple[list[_Job], str]) -> list[list[Any]]:
    assert _WORKER_RENDERER is not None
    jobs, out_dir = task
    return _render_jobs(_WORKER_RENDERER, jobs, Path(out_dir))


def _chunks(jobs: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start:start + size]


def _render_all(config: SyntheticConfig, plan: _Plan, out_dir: Path, workers: int) -> list[list[Any]]:
    if workers == 1 or len(plan.jobs) < 64:
        return _render_jobs(_Renderer(config, plan.identities), plan.jobs, out_dir)
    size = max(16, min(256, len(plan.jobs) // (4 * workers)))
    rows: list[list[Any]] = []
    # "spawn": every worker is a fresh interpreter. A forked worker is a copy of the caller, taken while the
    # caller's other threads (PyTorch's, tqdm's monitor, a logging or stdin thread) may hold a lock; the copy
    # waits on that lock forever. ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (at start-up
    # included) raises BrokenProcessPool instead of being replaced again and again while the caller waits.
    # Workers import this module by name, so the caller's __main__ needs the usual `if __name__ == "__main__"`.
    context = multiprocessing.get_context("spawn")
    tasks = [(chunk, str(out_dir)) for chunk in _chunks(plan.jobs, size)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(config, plan.identities)) as pool:
        for part in pool.map(_work, tasks):
            rows.extend(part)
    return rows


# --------------------------------------------------------------------------- dataset folder


class SyntheticRootError(FileExistsError):
    """The target folder holds something this call must not replace."""


@dataclass(frozen=True)
class SyntheticSummary:
    """What a generation produced (or found already in place).

    ``counts`` are the numbers the Market-1501 reader reports: ``gallery``
    images exclude the junk files (the reader drops them) and include the
    distractors, whose pid 0 counts as one gallery identity.
    """

    root: Path
    config: SyntheticConfig
    counts: dict[str, dict[str, int]]
    junk_images: int
    distractor_images: int
    total_files: int
    seconds: float
    images_per_second: float
    reused: bool
    workers: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        return data


def _counts_from_rows(rows: list[list[Any]]) -> tuple[dict[str, dict[str, int]], int, int, dict[str, int]]:
    images = {split: 0 for split in SPLIT_FOLDERS}
    pids: dict[str, set[int]] = {split: set() for split in SPLIT_FOLDERS}
    junk = distractors = 0
    for row in rows:
        split, pid = row[1], row[2]
        if pid == -1:
            junk += 1
            continue
        distractors += pid == 0
        images[split] += 1
        pids[split].add(pid)
    counts = {split: {"images": images[split], "identities": len(pids[split])} for split in SPLIT_FOLDERS}
    files = {folder: images[split] + (junk if split == "gallery" else 0) for split, folder in SPLIT_FOLDERS.items()}
    return counts, junk, distractors, files


def _metadata_text(config: SyntheticConfig, plan: _Plan, cameras: list[dict[str, Any]],
                   rows: list[list[Any]]) -> str:
    """synthetic.json: deterministic (no times, no paths), one image per line to stay readable."""
    counts, junk, distractors, files = _counts_from_rows(rows)
    head = {
        "generator": "fmn_core.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "layout": "market1501",
        "complete": True,
        "config": config.to_dict(),
        "counts": counts,
        "junk_images": junk,
        "distractor_images": distractors,
        "files": files,
        "body_layout": {k: list(v) for k, v in BODY_LAYOUT.items()},
        "cameras": cameras,
        "identities": plan.identities,
    }
    text = json.dumps(head, indent=1, sort_keys=True)
    lines = ",\n  ".join(json.dumps(row) for row in sorted(rows, key=lambda r: r[0]))
    images = f'"images": {{\n "columns": {json.dumps(list(IMAGE_COLUMNS))},\n "rows": [\n  {lines}\n ]\n}}'
    return text[:-2] + ",\n " + images + "\n}\n"


def read_metadata(root: str | Path) -> dict[str, Any]:
    """Load ``synthetic.json`` of a generated dataset."""
    return json.loads((Path(root) / METADATA_NAME).read_text(encoding="utf-8"))


def _config_differences(stored: dict[str, Any], config: SyntheticConfig) -> list[str]:
    wanted = config.to_dict()
    names = [f.name for f in fields(SyntheticConfig)]
    return [f"{name}: stored {stored.get(name)!r}, requested {wanted[name]!r}"
            for name in names if stored.get(name) != wanted[name]]


def _existing_dataset(root: Path, config: SyntheticConfig, overwrite: bool) -> dict[str, Any] | None:
    """Metadata of a reusable dataset at ``root``; None when generation should go ahead; raises otherwise."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise SyntheticRootError(f"{root} is a file, not a dataset folder; choose another root")
    entries = {entry.name for entry in root.iterdir()}
    if not entries:
        return None
    if METADATA_NAME not in entries:
        raise SyntheticRootError(
            f"{root} already holds files ({', '.join(sorted(entries)[:5])}) but no {METADATA_NAME}, so it is not a "
            "dataset this generator produced; refusing to touch it even with overwrite=True. Choose another root.")
    unexpected = entries - set(SPLIT_FOLDERS.values()) - {METADATA_NAME}
    if unexpected:
        raise SyntheticRootError(
            f"{root} holds a synthetic dataset plus files this generator did not write "
            f"({', '.join(sorted(unexpected)[:5])}); refusing to replace it even with overwrite=True. "
            "Move those files away or choose another root.")
    try:
        meta = read_metadata(root)
        differences = _config_differences(meta["config"], config)
        if meta.get("generator_version") != GENERATOR_VERSION:
            differences.append(f"generator_version: stored {meta.get('generator_version')!r}, "
                               f"this code {GENERATOR_VERSION}")
        complete = meta.get("complete") is True and all(
            (root / folder).is_dir() and sum(1 for _ in (root / folder).iterdir()) == count
            for folder, count in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        differences, complete = [f"{METADATA_NAME} is unreadable ({exc})"], False
    if not differences and complete:
        return meta
    if overwrite:
        return None
    reason = "; ".join(differences) if differences else "its files do not match the counts in synthetic.json"
    raise SyntheticRootError(
        f"{root} holds a different or incomplete synthetic dataset ({reason}); pass overwrite=True to replace it "
        "or choose another root")


def generate_synthetic(root: str | Path, config: SyntheticConfig | str = "tiny", workers: int = 1,
                       overwrite: bool = False) -> SyntheticSummary:
    """Write (or reuse) a synthetic Market-1501-style dataset at ``root``.

    A complete dataset with the same configuration is reused at once
    (``reused=True``). A different one is replaced only with ``overwrite``; a
    folder this generator did not produce is never replaced. Generation happens
    in a hidden sibling folder that is renamed to ``root`` at the end, so an
    interruption never leaves a partial dataset under ``root``. ``workers > 1``
    renders in that many processes with identical output.
    """
    config = resolve_config(config)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is not allowed: must be an integer >= 1")
    root = Path(root).expanduser().absolute()
    start = time.perf_counter()
    meta = _existing_dataset(root, config, overwrite)
    if meta is not None:
        return SyntheticSummary(root, config, meta["counts"], meta["junk_images"], meta["distractor_images"],
                                sum(meta["files"].values()), time.perf_counter() - start, 0.0, True, workers)
    cameras = camera_profiles(config)
    plan = _make_plan(config, cameras)
    with atomic_directory(root) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a dataset is meant to be shared
        for folder in SPLIT_FOLDERS.values():
            (tmp / folder).mkdir()
        rows = _render_all(config, plan, tmp, workers)
        (tmp / METADATA_NAME).write_text(_metadata_text(config, plan, cameras, rows), encoding="utf-8")
    seconds = time.perf_counter() - start
    counts, junk, distractors, files = _counts_from_rows(rows)
    total = sum(files.values())
    return SyntheticSummary(root, config, counts, junk, distractors, total, seconds, total / max(seconds, 1e-9),
                            False, workers)
