"""What a synthetic dataset is made of: its configuration, the presets, and the constants of its layout."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from fmn_core.utils.errors import FMNInputError

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
    raise FMNInputError(f"SyntheticConfig.{name}={value!r} is not allowed: {allowed}")


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


SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
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
        if config not in SYNTHETIC_PRESETS:
            raise FMNInputError(f"unknown synthetic preset {config!r}; choose one of {sorted(SYNTHETIC_PRESETS)} "
                                "or pass a SyntheticConfig")
        return SYNTHETIC_PRESETS[config]
    raise TypeError(f"config must be a SyntheticConfig or a preset name, got {type(config).__name__}")


def _rng(*entropy: int) -> np.random.Generator:
    """The random stream of one (seed, kind, ...) key: independent of order and of the worker that draws it."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(e) for e in entropy])))
