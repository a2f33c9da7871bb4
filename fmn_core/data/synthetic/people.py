"""Drawing a person from a look, a view and a pose: frontal and side views, bags, logos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fmn_core.data.synthetic.drawing import _ellipse, _quad, _rect
from fmn_core.data.synthetic.palettes import _CLOTHING, _DETAIL


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
