"""Readers for the Market-1501 folder layout (and DukeMTMC-reID, which copies it).

Layout under the root::

    bounding_box_train/   -> train
    query/                -> query
    bounding_box_test/    -> gallery

Market-1501 names images ``PPPP_cCsS_FFFFFF_BB.jpg`` (person, camera, sequence,
frame, box); DukeMTMC-reID names them ``PPPP_cC_fFFFFFFF.jpg``. Conventions kept
from the official evaluation: pid ``-1`` marks junk boxes, which the reader
drops and counts (as torchreid does); pid ``0000`` marks distractors, which stay
in the gallery as an ordinary label.

DukeMTMC-reID is supported as a format only: its authors withdrew the dataset,
so this project never downloads or bundles it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fmn_core.data.assemble import LoadedDataset, assemble
from fmn_core.data.image_check import ImageCheck
from fmn_core.data.report import DatasetLayoutError, DatasetReport

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class NamingScheme:
    """How one dataset encodes person and camera in a file name."""

    dataset: str
    pattern: re.Pattern[str]
    example: str
    num_cameras: int


MARKET1501 = NamingScheme("market1501", re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})$"),
                          "0002_c1s1_000451_03.jpg", num_cameras=6)
DUKEMTMC = NamingScheme("dukemtmc_reid", re.compile(r"^(-1|\d{4})_c(\d)_f(\d{7})$"),
                        "0001_c2_f0046182.jpg", num_cameras=8)


def find_root(root: str | Path, scheme: NamingScheme, dataset: str | None = None) -> Path:
    """Accept the dataset folder itself or its parent (e.g. ``Market-1501-v15.09.15``)."""
    root = Path(root).expanduser().absolute()
    name = dataset or scheme.dataset
    if not root.exists():
        raise DatasetLayoutError(
            f"{name}: dataset root {root} does not exist; expected a folder holding "
            f"{', '.join(SPLIT_FOLDERS.values())}/")
    if not root.is_dir():
        raise DatasetLayoutError(f"{name}: dataset root {root} is a file, expected a folder")
    if all((root / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
        return root
    candidates = [child for child in sorted(root.iterdir())
                  if child.is_dir() and all((child / f).is_dir() for f in SPLIT_FOLDERS.values())]
    if len(candidates) == 1:
        return candidates[0]
    missing = [f"{root / f}/" for f in SPLIT_FOLDERS.values() if not (root / f).is_dir()]
    raise DatasetLayoutError(
        f"{name}: {root} is not laid out as expected: missing {', '.join(missing)} "
        f"(expected the folders {', '.join(SPLIT_FOLDERS.values())} with images named like {scheme.example})")


def read_market_style(root: str | Path, scheme: NamingScheme, dataset: str | None = None,
                      check_images: ImageCheck = "header", strict: bool = True) -> LoadedDataset:
    """Read a Market-style root into a split table and report."""
    base = find_root(root, scheme, dataset)
    report = DatasetReport(dataset or scheme.dataset, str(base))
    rows: list[dict] = []
    malformed: list[str] = []
    bad_camera: list[str] = []
    junk: list[str] = []
    not_files: list[str] = []
    ignored: list[str] = []
    for split, folder in SPLIT_FOLDERS.items():
        for path in sorted((base / folder).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(str(path))
                continue
            if not path.is_file():  # a broken or looping symbolic link, or a folder named like an image
                not_files.append(str(path))
                continue
            match = scheme.pattern.match(path.stem)
            if match is None:
                malformed.append(str(path))
                continue
            pid, camera = int(match.group(1)), int(match.group(2))
            if not 1 <= camera <= scheme.num_cameras:
                bad_camera.append(str(path))
                continue
            if pid == -1:
                junk.append(str(path))
                continue
            rows.append({"path": str(path), "pid": pid, "camid": camera - 1, "split": split, "filename": path.name})
    report.add("malformed_filename", "warning",
               f"file names that do not follow {scheme.example}; skipped", malformed)
    report.add("camera_out_of_range", "warning",
               f"camera number outside 1..{scheme.num_cameras}; skipped", bad_camera)
    report.add("not_a_file", "warning", "image names that are not readable files (a broken or looping symbolic "
               "link, or a folder); skipped", not_files)
    report.add("ignored_file", "info", f"files without an image suffix ({', '.join(sorted(IMAGE_SUFFIXES))}); "
               "ignored", ignored)
    report.add("junk_image", "info", "pid -1 junk boxes, dropped as the standard protocol does", junk)
    return assemble(rows, report, check_images, strict, image_root=base)


def read_market1501(root: str | Path, check_images: ImageCheck = "header", strict: bool = True,
                    dataset: str = "market1501") -> LoadedDataset:
    """Market-1501 (12,936 train / 3,368 query / 19,732 gallery files, 3,819 of them junk)."""
    return read_market_style(root, MARKET1501, dataset, check_images, strict)


def read_dukemtmc(root: str | Path, check_images: ImageCheck = "header", strict: bool = True) -> LoadedDataset:
    """DukeMTMC-reID folder layout (format support only; never downloaded)."""
    return read_market_style(root, DUKEMTMC, None, check_images, strict)
