"""Colours and the sampling of each identity's global appearance and local details."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

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
