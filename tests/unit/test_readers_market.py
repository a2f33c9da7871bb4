"""Market-1501 and DukeMTMC-reID layout readers on small folders built here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fmn_core.data import DatasetError, DatasetLayoutError, read_dataset, read_dukemtmc, read_market1501
from tests.helpers import write_image


def build_market(root: Path) -> dict[str, list[str]]:
    """Two train ids (c1,c2), two test ids, one distractor, junk and odd files."""
    names = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                               "0007_c1s1_000101_01.jpg", "0007_c3s2_000201_02.jpg", "0007_c3s2_000301_02.jpg"],
        "query": ["0010_c1s1_001001_00.jpg", "0010_c2s1_001101_00.jpg", "0011_c4s3_002001_00.jpg"],
        "bounding_box_test": ["0010_c3s1_001201_01.jpg", "0010_c1s1_001301_01.jpg", "0011_c5s3_002101_01.jpg",
                              "0000_c6s1_000001_01.jpg", "-1_c1s1_000002_01.jpg", "-1_c2s1_000003_01.jpg"],
    }
    for folder, files in names.items():
        for i, name in enumerate(files):
            write_image(root / folder / name, seed=i)
    return names


def test_market_reader_counts_ids_cameras(tmp_path):
    build_market(tmp_path)
    loaded = read_market1501(tmp_path, check_images="decode")
    table, report = loaded.table, loaded.report
    assert report.counts == {
        "train": {"images": 5, "identities": 2, "cameras": 3},
        "query": {"images": 3, "identities": 2, "cameras": 3},
        "gallery": {"images": 4, "identities": 3, "cameras": 4},
    }
    assert report.count("junk_image") == 2
    assert not (table["pid"] == -1).any()
    gallery = table[table.split == "gallery"]
    assert sorted(gallery.pid.tolist()) == [0, 10, 10, 11]  # distractor 0000 kept as a label
    row = table[table.filename == "0007_c3s2_000201_02.jpg"].iloc[0]
    assert (row.pid, row.camid, row.split, row.label, row.dataset) == (7, 2, "train", 1, "market1501")
    assert table[table.split == "train"].label.tolist() == [0, 0, 1, 1, 1]
    assert (table[table.split != "train"].label == -1).all()
    assert list(table.columns) == ["path", "pid", "camid", "split", "dataset", "filename", "label"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in table.path)


def test_market_reader_accepts_parent_folder_and_never_writes(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    build_market(root)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    loaded = read_market1501(tmp_path)
    assert loaded.report.root == str(root)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_missing_root_names_what_was_expected(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist.*bounding_box_train"):
        read_market1501(tmp_path / "nowhere")


def test_wrong_layout_names_missing_folders(tmp_path):
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(DatasetLayoutError) as info:
        read_market1501(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "query") in message and str(tmp_path / "bounding_box_test") in message
    assert "0002_c1s1_000451_03.jpg" in message


def test_malformed_names_and_corrupt_images_are_counted_not_fatal(tmp_path):
    build_market(tmp_path)
    write_image(tmp_path / "bounding_box_train" / "person_7.jpg")
    write_image(tmp_path / "bounding_box_train" / "0007_c9s1_000001_01.jpg")  # camera 9 > 6
    (tmp_path / "bounding_box_train" / "0007_c2s1_000999_01.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "query" / "0011_c2s1_000998_01.jpg").write_bytes(b"")
    jpeg = (tmp_path / "bounding_box_test" / "0010_c3s1_001201_01.jpg").read_bytes()
    (tmp_path / "bounding_box_test" / "0011_c6s3_002102_01.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "query" / "notes.txt").write_text("ignored: not an image")

    header = read_market1501(tmp_path, check_images="header").report
    assert header.count("malformed_filename") == 1
    assert header.count("camera_out_of_range") == 1
    assert header.count("unreadable_image") == 2  # garbage and empty file; truncation needs a decode
    decoded = read_market1501(tmp_path, check_images="decode")
    assert decoded.report.count("unreadable_image") == 3
    finding = next(f for f in decoded.report.findings if f.kind == "unreadable_image")
    assert any("0011_c6s3_002102_01.jpg" in e for e in finding.examples)
    assert decoded.report.counts["train"]["images"] == 5
    assert "person_7.jpg" in str(decoded.report)


def test_query_identity_absent_from_gallery_is_reported(tmp_path):
    build_market(tmp_path)
    write_image(tmp_path / "query" / "0042_c1s1_000001_00.jpg")
    write_image(tmp_path / "query" / "0043_c2s1_000001_00.jpg")
    write_image(tmp_path / "bounding_box_test" / "0043_c2s1_000002_01.jpg")  # same camera only
    report = read_market1501(tmp_path).report
    assert report.count("query_identity_not_in_gallery") == 1
    assert report.count("query_match_only_same_camera") == 1
    assert not report.errors


def test_train_test_overlap_is_an_error_with_examples(tmp_path):
    build_market(tmp_path)
    write_image(tmp_path / "bounding_box_test" / "0002_c4s1_000001_01.jpg")
    with pytest.raises(DatasetError, match="train_test_identity_overlap") as info:
        read_market1501(tmp_path)
    assert "0002_c4s1_000001_01.jpg" in str(info.value)
    lenient = read_market1501(tmp_path, strict=False)
    assert lenient.report.count("train_test_identity_overlap") == 1


def test_empty_split_is_an_error(tmp_path):
    build_market(tmp_path)
    for file in (tmp_path / "query").iterdir():
        os.remove(file)
    with pytest.raises(DatasetError, match="query split has no images"):
        read_market1501(tmp_path)


def test_duke_layout(tmp_path):
    for folder, name in [("bounding_box_train", "0001_c2_f0046182.jpg"), ("bounding_box_train", "0001_c8_f0046999.jpg"),
                         ("query", "0005_c1_f0000001.jpg"), ("bounding_box_test", "0005_c7_f0000002.jpg"),
                         ("bounding_box_test", "0002_c1s1_000451_03.jpg")]:
        write_image(tmp_path / folder / name)
    loaded = read_dukemtmc(tmp_path)
    assert loaded.report.counts["train"] == {"images": 2, "identities": 1, "cameras": 2}
    assert loaded.table[loaded.table.split == "gallery"].camid.tolist() == [6]
    assert loaded.report.count("malformed_filename") == 1  # a Market name is not a Duke name
    assert read_dataset("dukemtmc_reid", tmp_path).name == "dukemtmc_reid"


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'viper'.*market1501"):
        read_dataset("viper", tmp_path)


def test_split_table_round_trip(tmp_path):
    build_market(tmp_path / "m")
    loaded = read_market1501(tmp_path / "m")
    path = loaded.save(tmp_path / "out" / "splits.parquet")
    from fmn_core.data import load_split_table

    again = load_split_table(path)
    assert again.equals(loaded.table)
    assert path.with_suffix(".report.json").is_file()


def test_saved_table_is_relative_and_follows_its_dataset(tmp_path):
    import json
    import shutil

    import pyarrow.parquet as pq

    from fmn_core.data import load_split_table

    build_market(tmp_path / "a" / "data" / "market1501")
    loaded = read_market1501(tmp_path / "a" / "data" / "market1501")
    path = loaded.save(tmp_path / "a" / "artifacts" / "market1501" / "splits.parquet")
    stored = pq.read_table(path)
    assert stored.column("path")[0].as_py() == "bounding_box_train/0002_c1s1_000451_03.jpg"  # relative on disk
    assert stored.schema.metadata[b"fmn.image_root_from_table"] == b"../../data/market1501"
    report = json.loads(path.with_suffix(".report.json").read_text())
    assert report["root"] == "../../data/market1501" and not any(
        e.startswith("/") for f in report["findings"] for e in f["examples"])

    shutil.move(tmp_path / "a", tmp_path / "b")  # the dataset and its table move together
    moved = load_split_table(tmp_path / "b" / "artifacts" / "market1501" / "splits.parquet")
    new_root = tmp_path / "b" / "data" / "market1501"
    assert moved.path.tolist() == [p.replace(str(tmp_path / "a"), str(tmp_path / "b")) for p in loaded.table.path]
    assert all(Path(p).is_file() for p in moved.path) and moved.drop(columns="path").equals(
        loaded.table.drop(columns="path"))

    shutil.move(new_root, tmp_path / "elsewhere")  # now the dataset alone moves
    table = tmp_path / "b" / "artifacts" / "market1501" / "splits.parquet"
    with pytest.raises(DatasetLayoutError, match="which was .*a/data/market1501 when the table was written") as error:
        load_split_table(table)
    assert str(new_root) in str(error.value) and "pass its new root" in str(error.value)
    with pytest.raises(DatasetLayoutError, match=f"not under {tmp_path / 'nowhere'}"):
        load_split_table(table, root=tmp_path / "nowhere")
    again = load_split_table(table, root=tmp_path / "elsewhere")
    assert all(Path(p).is_file() and p.startswith(str(tmp_path / "elsewhere")) for p in again.path)


def test_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    build_market(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    table = read_market1501("m").table
    assert all(Path(p).is_absolute() for p in table.path)
