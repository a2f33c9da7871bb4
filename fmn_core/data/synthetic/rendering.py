"""Rendering the planned images (in one process or several, byte-identical either way) and writing them."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmn_core.data.synthetic.cameras import _camera_background, camera_profiles
from fmn_core.data.synthetic.config import (
    _KIND_DISTRACTOR,
    _KIND_JUNK,
    _KIND_PERSON,
    _STREAM_CAMERA,
    _STREAM_DISTRACTOR,
    _STREAM_JUNK,
    _STREAM_PERSON,
    VIEWS,
    SyntheticConfig,
    _rng,
)
from fmn_core.data.synthetic.drawing import _blur, _ellipse, _rect
from fmn_core.data.synthetic.palettes import _HAIR, _sample_global, _sample_local
from fmn_core.data.synthetic.people import _draw_person, _Look
from fmn_core.data.synthetic.plan import _Job, _Plan
from fmn_core.utils.main_guard import refuse_unguarded_main

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
    # Workers run the caller's main script again first, so it needs the usual `if __name__ == "__main__"`: a script
    # without it is refused here, once, before any worker starts (fmn_core.utils.main_guard).
    refuse_unguarded_main(f"generate_synthetic(workers={workers})")
    context = multiprocessing.get_context("spawn")
    tasks = [(chunk, str(out_dir)) for chunk in _chunks(plan.jobs, size)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(config, plan.identities)) as pool:
        for part in pool.map(_work, tasks):
            rows.extend(part)
    return rows
