"""CSV manifest reader for users' own data."""

from __future__ import annotations

import pytest

from fmn_core.data import DatasetError, DatasetLayoutError, read_custom
from tests.helpers import write_image


def build(tmp_path, extra_lines: str = "") -> None:
    for name in ["a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg"]:
        write_image(tmp_path / "imgs" / name, fmt="PNG" if name.endswith("png") else None)
    (tmp_path / "manifest.csv").write_text(
        "path,pid,camid,split,note\n"
        "imgs/a.jpg,5,0,train,x\n"
        "imgs/b.jpg,9,1,train,\n"
        f"{tmp_path / 'imgs' / 'c.png'},20,0,query,\n"
        "imgs/d.jpg,20,1,gallery,\n"
        "imgs/e.jpg,0,2,gallery,distractor\n" + extra_lines)


def test_manifest_read(tmp_path):
    build(tmp_path)
    loaded = read_custom(tmp_path)
    table = loaded.table
    assert loaded.report.counts == {"train": {"images": 2, "identities": 2, "cameras": 2},
                                    "query": {"images": 1, "identities": 1, "cameras": 1},
                                    "gallery": {"images": 2, "identities": 2, "cameras": 2}}
    assert table[table.split == "train"].label.tolist() == [0, 1]
    assert table.dataset.unique().tolist() == ["custom"]


def test_bad_rows_reported_with_line_numbers(tmp_path):
    build(tmp_path, "imgs/a.jpg,x,0,train,\nimgs/a.jpg,5,0,validation,\nimgs/zz.jpg,5,0,train,\n"
                    "imgs/a.jpg,-1,0,gallery,\nimgs/a.jpg,3,-2,train,\n")
    report = read_custom(tmp_path / "manifest.csv").report
    assert report.count("malformed_row") == 3
    messages = " ".join(next(f for f in report.findings if f.kind == "malformed_row").examples)
    assert "manifest.csv:7: pid='x' is not an integer" in messages
    assert "validation" in messages and ":11: camid=-2" in messages
    assert report.count("missing_file") == 1
    assert report.count("junk_image") == 1


def test_missing_columns_and_missing_manifest(tmp_path):
    with pytest.raises(DatasetLayoutError, match="manifest.csv does not exist"):
        read_custom(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,person\nx.jpg,1\n")
    with pytest.raises(DatasetError, match=r"lacks the columns \['path', 'pid', 'camid', 'split'\]"):
        read_custom(tmp_path)


def test_saved_table_is_relative_to_the_folder_holding_manifest_and_images(tmp_path):
    import pyarrow.parquet as pq

    from fmn_core.data import load_split_table

    build(tmp_path / "set")
    inside = read_custom(tmp_path / "set")
    assert inside.image_root == tmp_path / "set"  # every image beside the manifest: its folder is the root
    (tmp_path / "set" / "manifest.csv").write_text((tmp_path / "set" / "manifest.csv").read_text().replace(
        "imgs/e.jpg", str(write_image(tmp_path / "shared" / "e.jpg"))))
    spread = read_custom(tmp_path / "set")
    assert spread.image_root == tmp_path  # one image elsewhere: the folder holding all of them
    path = spread.save(tmp_path / "out" / "splits.parquet")
    assert "shared/e.jpg" in pq.read_table(path).column("path").to_pylist()
    assert load_split_table(path).path.tolist() == spread.table.path.tolist()
