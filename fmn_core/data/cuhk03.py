"""CUHK03 under the new (767/700 identity) protocol of Zhong et al., CVPR 2017.

Expected files under the root (as distributed)::

    cuhk-03.mat                                  (or cuhk03_release/cuhk-03.mat)
    cuhk03_new_protocol_config_detected.mat
    cuhk03_new_protocol_config_labeled.mat

``cuhk-03.mat`` is a MATLAB v7.3 (HDF5) file whose ``detected`` / ``labeled``
entries hold one cell array per camera pair, ``persons x 10`` image references
(images 1-5 from the pair's first camera, 6-10 from its second; empty cells
are missing images). Images are extracted once to PNG files named
``{pair}_{person:03d}_{view}_{image:02d}.png``, the names the protocol files'
``filelist`` uses, in a cache folder outside the data root (the user's folder
is never written to). The protocol files give 1-based ``train_idx``,
``query_idx`` and ``gallery_idx`` into ``filelist`` / ``labels`` / ``camId``.
``camid`` is ``camId - 1``: the view within the camera pair, as in the
toolkits that report CUHK03-NP numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from fmn_core.data.assemble import LoadedDataset, assemble
from fmn_core.data.image_check import ImageCheck
from fmn_core.data.report import DatasetError, DatasetLayoutError, DatasetReport
from fmn_core.utils.atomic import atomic_directory
from fmn_core.utils.errors import FMNInputError

CropKind = Literal["detected", "labeled"]
PROTOCOL_KEYS = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")


def default_cache_dir() -> Path:
    """Where extracted images live: ``$FMN_CACHE_DIR`` or ``~/.cache/fmn_reid``."""
    return Path(os.environ.get("FMN_CACHE_DIR", Path.home() / ".cache" / "fmn_reid")).expanduser().absolute()


def _find_raw_mat(root: Path) -> Path:
    for candidate in (root / "cuhk-03.mat", root / "cuhk03_release" / "cuhk-03.mat"):
        if candidate.is_file():
            return candidate
    raise DatasetLayoutError(
        f"cuhk03: no cuhk-03.mat under {root}; expected {root / 'cuhk-03.mat'} or "
        f"{root / 'cuhk03_release' / 'cuhk-03.mat'} (the MATLAB v7.3 file of the CUHK03 release)")


def _load_protocol(path: Path) -> dict[str, np.ndarray]:
    """Read a protocol .mat file (MATLAB v5 through SciPy, v7.3 through h5py)."""
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path))
        out = {key: raw[key] for key in PROTOCOL_KEYS if key in raw}
        if "filelist" in out:
            out["filelist"] = np.array([str(np.ravel(item)[0]) for item in np.ravel(out["filelist"])])
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        import h5py

        with h5py.File(path, "r") as handle:
            out = {}
            for key in PROTOCOL_KEYS:
                if key not in handle:
                    continue
                data = handle[key]
                if key == "filelist":
                    out[key] = np.array(["".join(map(chr, np.ravel(handle[ref][()]))) for ref in np.ravel(data[()])])
                else:
                    out[key] = data[()]
    except (ValueError, OSError, IndexError, TypeError, scipy.io.matlab.MatReadError) as exc:  # empty, cut, not .mat
        raise DatasetError(f"cuhk03: cannot read protocol file {path}: {exc}") from exc
    missing = [key for key in PROTOCOL_KEYS if key not in out]
    if missing:
        raise DatasetError(f"cuhk03: protocol file {path} lacks {missing}; expected the keys {list(PROTOCOL_KEYS)}")
    for key in PROTOCOL_KEYS[1:]:
        out[key] = np.ravel(out[key]).astype(np.int64)
    if not (len(out["filelist"]) == len(out["labels"]) == len(out["camId"])):
        raise DatasetError(f"cuhk03: {path}: filelist, labels and camId differ in length "
                           f"({len(out['filelist'])}, {len(out['labels'])}, {len(out['camId'])})")
    return out


def extract_images(raw_mat: Path, kind: CropKind, cache_dir: Path) -> tuple[Path, int]:
    """Extract one crop kind to PNG files once; return the folder and empty-cell count.

    A marker file records the source file's size and modification time, so a
    changed ``cuhk-03.mat`` is extracted again and an unchanged one never is.
    """
    import h5py
    from PIL import Image

    stat = raw_mat.stat()
    stamp = {"source": str(raw_mat.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "kind": kind}
    target = cache_dir / "cuhk03" / f"images_{kind}"
    marker = target / "extracted.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if all(saved.get(key) == value for key, value in stamp.items()):
            return target, int(saved.get("empty_cells", 0))
    try:
        handle = h5py.File(raw_mat, "r")
    except OSError as exc:
        raise DatasetError(f"cuhk03: {raw_mat} is not a readable MATLAB v7.3 (HDF5) file: {exc}") from exc
    empty = 0
    with handle, atomic_directory(target) as tmp:
        if kind not in handle:
            raise DatasetError(f"cuhk03: {raw_mat} has no '{kind}' entry; it holds {sorted(handle.keys())}")
        for pair_index, pair_ref in enumerate(np.ravel(handle[kind][()])):
            persons = handle[pair_ref][()].T  # persons x 10 references
            for person_index in range(persons.shape[0]):
                for image_index, image_ref in enumerate(persons[person_index]):
                    pixels = handle[image_ref][()]
                    if pixels.ndim != 3 or pixels.size == 0:
                        empty += 1
                        continue
                    view = 1 if image_index < 5 else 2
                    name = f"{pair_index + 1}_{person_index + 1:03d}_{view}_{image_index + 1:02d}.png"
                    Image.fromarray(np.ascontiguousarray(pixels.T).astype(np.uint8)).save(tmp / name)
        (tmp / "extracted.json").write_text(json.dumps({**stamp, "empty_cells": empty}, indent=2))
    return target, empty


def read_cuhk03(root: str | Path, kind: CropKind = "detected", cache_dir: str | Path | None = None,
                check_images: ImageCheck = "header", strict: bool = True) -> LoadedDataset:
    """CUHK03-NP, detected or labeled crops: 7,365/7,368 train, 1,400 query, 5,332/5,328 gallery."""
    if kind not in ("detected", "labeled"):
        raise FMNInputError(f"cuhk03 kind must be 'detected' or 'labeled', got {kind!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetLayoutError(f"cuhk03: dataset root {root} does not exist; expected a folder holding "
                                 f"cuhk-03.mat and cuhk03_new_protocol_config_{kind}.mat")
    raw_mat = _find_raw_mat(root)
    protocol_path = root / f"cuhk03_new_protocol_config_{kind}.mat"
    if not protocol_path.is_file():
        raise DatasetLayoutError(f"cuhk03: protocol file {protocol_path} does not exist; download "
                                 f"cuhk03_new_protocol_config_{kind}.mat (CUHK03-NP) and place it in {root}")
    protocol = _load_protocol(protocol_path)
    images_dir, empty_cells = extract_images(raw_mat, kind, Path(cache_dir) if cache_dir else default_cache_dir())

    report = DatasetReport(f"cuhk03_{kind}", str(root))
    report.add("empty_cell", "info", "empty image cells in cuhk-03.mat (no image recorded)", count=empty_cells)
    rows: list[dict] = []
    out_of_range: list[str] = []
    missing: list[str] = []
    for split, key in (("train", "train_idx"), ("query", "query_idx"), ("gallery", "gallery_idx")):
        for index in protocol[key] - 1:
            if not 0 <= index < len(protocol["filelist"]):
                out_of_range.append(f"{protocol_path}: {key} entry {index + 1}")
                continue
            name = protocol["filelist"][index]
            path = images_dir / name
            if not path.is_file():
                missing.append(f"{name} (listed in {protocol_path.name}, not in cuhk-03.mat)")
                continue
            rows.append({"path": str(path), "pid": int(protocol["labels"][index]),
                         "camid": int(protocol["camId"][index]) - 1, "split": split, "filename": name})
    report.add("index_out_of_range", "warning", "protocol indices outside filelist; skipped", out_of_range)
    report.add("missing_file", "warning", "protocol entries whose image is absent; skipped", missing)
    # the images live in the extraction cache, not under root: saved tables are relative to that folder
    return assemble(rows, report, check_images, strict, image_root=images_dir)
