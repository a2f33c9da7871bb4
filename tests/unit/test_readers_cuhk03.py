"""CUHK03-NP reader on a tiny cuhk-03.mat (HDF5, MATLAB v7.3 layout) and protocol files built here."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from fmn_core.data import DatasetError, DatasetLayoutError, read_cuhk03, read_dataset

# persons per camera pair, and which (pair, person, image) cells are empty
PAIRS = [3, 2]
EMPTY = {(0, 0, 9), (1, 1, 4)}


def build_raw_mat(path: Path, kinds=("detected", "labeled")) -> None:
    """Mimic MATLAB v7.3: cell arrays are datasets of object references into '#refs#'."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        counter = 0
        for kind in kinds:
            pair_refs = []
            for pair, persons in enumerate(PAIRS):
                cells = np.empty((10, persons), dtype=h5py.ref_dtype)
                for person in range(persons):
                    for image in range(10):
                        counter += 1
                        if (pair, person, image) in EMPTY:
                            data = refs.create_dataset(f"e{counter}", data=np.zeros(2, dtype=np.uint64))
                        else:
                            height, width = 40 + person, 20 + image
                            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                            data = refs.create_dataset(f"i{counter}", data=pixels.T)  # MATLAB stores (3, W, H)
                        cells[image, person] = data.ref
                pair_dataset = refs.create_dataset(f"p{kind}{pair}", data=cells)
                pair_refs.append(pair_dataset.ref)
            f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))


def name(pair: int, person: int, image: int) -> str:
    return f"{pair + 1}_{person + 1:03d}_{1 if image < 5 else 2}_{image + 1:02d}.png"


def build_protocol(path: Path) -> dict:
    """Pair 1 persons 1-2 train (labels 1, 2); pair 1 person 3 and pair 2 person 1 test."""
    filelist, labels, cams = [], [], []
    global_label = {(0, 0): 1, (0, 1): 2, (0, 2): 3, (1, 0): 4, (1, 1): 5}
    for pair, persons in enumerate(PAIRS):
        for person in range(persons):
            for image in range(10):
                if (pair, person, image) in EMPTY:
                    continue
                filelist.append(name(pair, person, image))
                labels.append(global_label[(pair, person)])
                cams.append(1 if image < 5 else 2)
    labels = np.array(labels)
    index = np.arange(1, len(filelist) + 1)
    train = index[np.isin(labels, [1, 2])]
    test = index[np.isin(labels, [3, 4])]
    query = np.array([i for i in test if filelist[i - 1].endswith(("_01.png", "_06.png"))])
    gallery = np.setdiff1d(test, query)
    cell = np.empty((len(filelist), 1), dtype=object)
    for i, n in enumerate(filelist):
        cell[i, 0] = n
    scipy.io.savemat(path, {"filelist": cell, "labels": labels[:, None], "camId": np.array(cams)[:, None],
                            "train_idx": train[:, None], "query_idx": query[:, None], "gallery_idx": gallery[:, None]})
    return {"train": len(train), "query": len(query), "gallery": len(gallery)}


@pytest.fixture
def cuhk_root(tmp_path):
    root = tmp_path / "cuhk03"
    (root / "cuhk03_release").mkdir(parents=True)
    build_raw_mat(root / "cuhk03_release" / "cuhk-03.mat")
    sizes = {kind: build_protocol(root / f"cuhk03_new_protocol_config_{kind}.mat") for kind in ("detected", "labeled")}
    return root, sizes


def test_reads_new_protocol_and_caches_outside_root(cuhk_root, tmp_path):
    root, sizes = cuhk_root
    cache = tmp_path / "cache"
    before = sorted(p.name for p in root.rglob("*"))
    loaded = read_cuhk03(root, kind="detected", cache_dir=cache, check_images="decode")
    table = loaded.table
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written into the data folder
    assert {split: (table.split == split).sum() for split in ("train", "query", "gallery")} == sizes["detected"]
    assert loaded.report.counts["train"]["identities"] == 2
    assert sorted(table[table.split == "query"].pid.unique()) == [3, 4]
    assert set(table.camid) == {0, 1}
    assert table[table.split == "train"].label.tolist() == [0] * 9 + [1] * 10  # one empty cell
    assert loaded.report.count("empty_cell") == 2
    assert all(p.startswith(str(cache)) for p in table.path)
    row = table[table.filename == "1_003_2_07.png"].iloc[0]
    assert (row.pid, row.camid, row.split) == (3, 1, "gallery")
    from PIL import Image

    with Image.open(row.path) as image:  # pair 1, person 3 (index 2), image 7 (index 6): 42 x 26
        assert image.size == (26, 42)


def test_extraction_happens_once(cuhk_root, tmp_path):
    root, _ = cuhk_root
    cache = tmp_path / "cache"
    read_cuhk03(root, kind="labeled", cache_dir=cache)
    marker = cache / "cuhk03" / "images_labeled" / "extracted.json"
    first = marker.stat().st_mtime_ns
    again = read_dataset("cuhk03_labeled", root, cache_dir=cache)
    assert marker.stat().st_mtime_ns == first
    assert again.name == "cuhk03_labeled"


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        read_cuhk03(tmp_path / "none")
    tmp_path.joinpath("cuhk03").mkdir()
    with pytest.raises(DatasetLayoutError, match="cuhk-03.mat"):
        read_cuhk03(tmp_path / "cuhk03")
    build_raw_mat(tmp_path / "cuhk03" / "cuhk-03.mat")
    with pytest.raises(DatasetLayoutError, match="cuhk03_new_protocol_config_detected.mat"):
        read_cuhk03(tmp_path / "cuhk03", cache_dir=tmp_path / "c")


def test_corrupt_mat_file_is_a_clear_error(tmp_path):
    root = tmp_path / "cuhk03"
    root.mkdir()
    (root / "cuhk-03.mat").write_bytes(b"MATLAB 5.0 MAT-file, but truncated")
    build_protocol(root / "cuhk03_new_protocol_config_detected.mat")
    with pytest.raises(DatasetError, match="not a readable MATLAB v7.3"):
        read_cuhk03(root, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "cuhk03" / "images_detected").exists()


def test_protocol_entries_without_image_are_counted(cuhk_root, tmp_path):
    root, sizes = cuhk_root
    build_raw_mat(root / "cuhk03_release" / "cuhk-03.mat", kinds=("detected", "labeled"))
    protocol = scipy.io.loadmat(root / "cuhk03_new_protocol_config_detected.mat")
    protocol["filelist"][0, 0] = np.array(["9_999_1_01.png"])
    scipy.io.savemat(root / "cuhk03_new_protocol_config_detected.mat",
                     {k: v for k, v in protocol.items() if not k.startswith("__")})
    loaded = read_cuhk03(root, cache_dir=tmp_path / "c")
    assert loaded.report.count("missing_file") == 1
    assert (loaded.table.split == "train").sum() == sizes["detected"]["train"] - 1
