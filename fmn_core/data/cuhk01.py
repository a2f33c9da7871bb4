"""CUHK01 (Li, Zhao and Wang, ACCV 2012): 971 identities, two disjoint campus cameras, two images each.

Expected layout (the ``campus`` folder as distributed)::

    campus/0001001.png  ... campus/0971004.png

``NNNNMMM.png``: identity ``NNNN`` (1-971), image ``MMM``; 001-002 are from
camera A (``camid`` 0), 003-004 from camera B (``camid`` 1). The root may be
the ``campus`` folder itself or a folder holding ``campus/`` (or
``CUHK01/campus/``).

Protocol (485 training / 486 test identities, single-shot evaluation as in
torchreid and most CUHK01 reports since Ahmed et al., CVPR 2015): every image
of a training identity is a training image; a test identity's camera-A images
are queries and its camera-B images the gallery, so each query has exactly two
true matches, both under the other camera. ``split_id`` chooses the identities:

* ``0``: the fixed split, identities sorted by number: the first 485 train,
  the other 486 test;
* ``1, 2, ...``: a random split, the identities permuted by NumPy's
  ``default_rng(split_id)`` (torchreid draws 10 such splits; these are seeded
  so that anyone gets the same ones without a ``splits.json``).

``validation_identities`` = v > 0 gives the validation view instead: the
last v training identities become the query/gallery split (laid out like the
test split), the other training identities stay ``train``, and the test
identities are left out. Choose hyper-parameters (re-ranking's k1, k2, a
variant of the method) on it, then report on the test split (v = 0).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fmn_core.data.assemble import LoadedDataset, assemble
from fmn_core.data.image_check import ImageCheck
from fmn_core.data.report import DatasetError, DatasetLayoutError, DatasetReport
from fmn_core.utils.errors import FMNInputError

NUM_IDENTITIES = 971
NUM_TEST_IDENTITIES = 486
IMAGES_PER_CAMERA = 2
#: 1-based image numbers per camera, as in the file names
CAMERA_IMAGES = {0: (1, 2), 1: (3, 4)}
NAME = re.compile(r"^(\d{4})(\d{3})$")
EXAMPLE = "0001001.png"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def find_campus(root: str | Path) -> Path:
    """The folder holding the images: ``root`` itself, ``root/campus`` or ``root/CUHK01/campus``."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DatasetLayoutError(f"cuhk01: dataset root {root} does not exist; expected the CUHK01 'campus' folder "
                                 f"(images named like {EXAMPLE}) or a folder holding it")
    if not root.is_dir():
        raise DatasetLayoutError(f"cuhk01: dataset root {root} is a file, expected a folder")
    for candidate in (root, root / "campus", root / "CUHK01" / "campus"):
        if candidate.is_dir() and any(NAME.match(p.stem) for p in candidate.iterdir()):
            return candidate
    raise DatasetLayoutError(f"cuhk01: no images named like {EXAMPLE} in {root}, {root / 'campus'} or "
                             f"{root / 'CUHK01' / 'campus'}")


def split_identities(pids: list[int], split_id: int,
                     num_test: int = NUM_TEST_IDENTITIES) -> tuple[list[int], list[int]]:
    """(train pids, test pids) of split ``split_id``: 0 = sorted (the first ones train), k > 0 = seeded permutation."""
    if split_id < 0:
        raise FMNInputError(f"cuhk01: split_id={split_id}; expected 0 (the fixed sorted split) or a positive seed")
    if not 0 < num_test < len(pids):
        raise FMNInputError(f"cuhk01: {num_test} test identities out of {len(pids)}; expected between 1 and "
                            f"{len(pids) - 1}")
    ordered = sorted(pids)
    if split_id > 0:
        ordered = [ordered[i] for i in np.random.default_rng(split_id).permutation(len(ordered))]
    num_train = len(ordered) - num_test
    return sorted(ordered[:num_train]), sorted(ordered[num_train:])


def read_cuhk01(root: str | Path, check_images: ImageCheck = "header", strict: bool = True, split_id: int = 0,
                num_test: int = NUM_TEST_IDENTITIES, validation_identities: int = 0) -> LoadedDataset:
    """Read the campus folder into a split table under the 485/486 protocol (see the module's docstring)."""
    campus = find_campus(root)
    report = DatasetReport("cuhk01", str(campus))
    by_pid: dict[int, list[tuple[Path, int]]] = {}
    malformed, bad_index, ignored = [], [], []
    for path in sorted(campus.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            ignored.append(str(path))
            continue
        match = NAME.match(path.stem)
        if match is None:
            malformed.append(str(path))
            continue
        pid, index = int(match.group(1)), int(match.group(2))
        camid = next((cam for cam, numbers in CAMERA_IMAGES.items() if index in numbers), None)
        if camid is None or pid == 0:
            bad_index.append(str(path))
            continue
        by_pid.setdefault(pid, []).append((path, camid))
    report.add("malformed_filename", "warning", f"file names that do not follow {EXAMPLE} (NNNN identity, MMM image "
               "001-004); skipped", malformed)
    report.add("image_out_of_range", "warning", "identity 0000 or image number outside 001-004 (camera A: 001-002, "
               "camera B: 003-004); skipped", bad_index)
    report.add("ignored_file", "info", "files that are not images; ignored", ignored)
    one_camera = [f"identity {pid}: cameras {sorted({c for _, c in images})}"
                  for pid, images in sorted(by_pid.items()) if len({c for _, c in images}) < 2]
    report.add("single_camera_identity", "warning", "identities seen by one camera only (no cross-camera match); "
               "kept", one_camera)
    if len(by_pid) < 2:
        raise DatasetError(f"cuhk01: {len(by_pid)} identities in {campus}; the protocol needs at least 2")
    short = [f"identity {pid}: {len(images)} of {2 * IMAGES_PER_CAMERA} images"
             for pid, images in sorted(by_pid.items()) if len(images) < 2 * IMAGES_PER_CAMERA]
    report.add("incomplete_identity", "warning", f"identities with fewer than CUHK01's {2 * IMAGES_PER_CAMERA} "
               "images; kept", short)
    train_pids, test_pids = split_identities(list(by_pid), split_id, min(num_test, len(by_pid) - 1))
    incomplete = _incomplete_folder(campus, set(by_pid), split_id, len(train_pids), len(test_pids))
    if incomplete:
        missing = sorted(set(range(1, NUM_IDENTITIES + 1)) - set(by_pid))
        report.add("incomplete_dataset", "warning", incomplete, [f"identity {pid} missing" for pid in missing],
                   count=len(missing))
    if not 0 <= validation_identities < len(train_pids):
        raise FMNInputError(f"cuhk01: validation_identities={validation_identities}; expected 0 to "
                            f"{len(train_pids) - 1} (there are {len(train_pids)} training identities)")
    if len(train_pids) - validation_identities < 2:  # even when not strict: no model trains on one identity
        report.add("too_few_training_identities", "error", f"training needs at least 2 training identities and split "
                   f"{split_id} leaves {len(train_pids) - validation_identities}; use the complete folder",
                   [incomplete or f"cuhk01: {len(by_pid)} identities in {campus}"])
        raise DatasetError(report)
    if validation_identities:
        evaluated = set(train_pids[-validation_identities:])
        train = set(train_pids[:-validation_identities])
    else:
        evaluated, train = set(test_pids), set(train_pids)
    rows = []
    for pid in sorted(train | evaluated):
        for path, camid in by_pid[pid]:
            split = "train" if pid in train else ("query" if camid == 0 else "gallery")
            rows.append({"path": str(path), "pid": pid, "camid": camid, "split": split, "filename": path.name})
    return assemble(rows, report, check_images, strict, image_root=campus)


def _incomplete_folder(campus: Path, found: set[int], split_id: int, num_train: int, num_test: int) -> str:
    """What a folder with fewer than CUHK01's identities means for the split, or '' when it holds them all."""
    if len(found) >= NUM_IDENTITIES:
        return ""
    how = ("the fixed split takes identities by number, the last 486 found for testing" if split_id == 0 else
           f"split {split_id} permutes the identities found")
    return (f"cuhk01: {campus} is incomplete: {len(found)} of CUHK01's {NUM_IDENTITIES} identities "
            f"({NUM_IDENTITIES - len(found)} missing); {how}, so this reads as {num_train} training and {num_test} "
            f"test identities instead of {NUM_IDENTITIES - NUM_TEST_IDENTITIES} and {NUM_TEST_IDENTITIES}: results "
            "are not comparable with the published protocol.")


def official_counts() -> dict[str, int]:
    """Images per split under the 485/486 protocol: every identity has two images per camera."""
    train = (NUM_IDENTITIES - NUM_TEST_IDENTITIES) * 2 * IMAGES_PER_CAMERA
    return {"train": train, "query": NUM_TEST_IDENTITIES * IMAGES_PER_CAMERA,
            "gallery": NUM_TEST_IDENTITIES * IMAGES_PER_CAMERA}

