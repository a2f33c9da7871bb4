"""The plan of a dataset: identities, groups, splits, and one job per image, each with its own random stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fmn_core.data.synthetic.cameras import camera_profiles
from fmn_core.data.synthetic.config import (
    _KIND_DISTRACTOR,
    _KIND_JUNK,
    _KIND_PERSON,
    _STREAM_PLAN,
    SPLIT_FOLDERS,
    VIEWS,
    SyntheticConfig,
    _rng,
)
from fmn_core.data.synthetic.palettes import _sample_global, _sample_local, local_difference


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


def plan_dataset(config: SyntheticConfig) -> _Plan:
    """The plan of a dataset (its identities and one job per image) without drawing anything."""
    return _make_plan(config, camera_profiles(config))
