"""The CUHK01 reader and partition, on stand-in campus folders the tests write (never the real images)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from fmn_assets.assets import CHECKS
from fmn_assets.assets.data import dataset_splits
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_assets.validation import OFFICIAL_COUNTS, counts_suite, queries_suite, schema_suite
from fmn_core.cli import main as fmn_main
from fmn_core.data import DatasetError, DatasetLayoutError, read_dataset
from fmn_core.data.cuhk01 import NUM_IDENTITIES, NUM_TEST_IDENTITIES, official_counts, split_identities


def campus(folder: Path, identities: int = NUM_IDENTITIES, size: tuple[int, int] = (16, 6)) -> Path:
    """A CUHK01-shaped folder: NNNNMMM.png, images 001-002 camera A and 003-004 camera B, small random pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for pid in range(1, identities + 1):
        for image in range(1, 5):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{pid:04d}{image:03d}.png")
    return folder


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """All 971 identities x 4 images, as the real folder has them (tiny pixels)."""
    return campus(tmp_path_factory.mktemp("cuhk01") / "CUHK01" / "campus")


def test_the_fixed_split_has_the_published_counts_and_layout(full):
    table = read_dataset("cuhk01", full).table
    counts = table.groupby("split").agg(images=("path", "size"), ids=("pid", "nunique"))
    assert counts.loc["train"].tolist() == [(NUM_IDENTITIES - NUM_TEST_IDENTITIES) * 4, 485]
    assert counts.loc["query"].tolist() == [NUM_TEST_IDENTITIES * 2, 486]
    assert counts.loc["gallery"].tolist() == [NUM_TEST_IDENTITIES * 2, 486]
    assert official_counts() == OFFICIAL_COUNTS["cuhk01"]
    # sorted split: identities 1-485 train, 486-971 test; camera A queries, camera B gallery
    assert sorted(table[table.split == "train"].pid.unique()) == list(range(1, 486))
    assert set(table[table.split == "query"].pid) == set(range(486, 972))
    assert set(table[table.split == "query"].camid) == {0} and set(table[table.split == "gallery"].camid) == {1}
    assert set(table[table.split == "query"].filename.str[4:7]) == {"001", "002"}
    assert set(table[table.split == "gallery"].filename.str[4:7]) == {"003", "004"}
    assert sorted(table[table.split == "train"].label.unique()) == list(range(485))


def test_the_root_may_be_the_campus_folder_or_one_of_its_parents(full):
    expected = read_dataset("cuhk01", full).table.path.tolist()
    for root in (full, full.parent, full.parent.parent):
        assert read_dataset("cuhk01", root).table.path.tolist() == expected


def test_seeded_random_splits_are_reproducible_disjoint_and_differ_from_the_sorted_one():
    pids = list(range(1, NUM_IDENTITIES + 1))
    sorted_train, _ = split_identities(pids, 0)
    one_train, one_test = split_identities(pids, 1)
    assert split_identities(pids, 1) == (one_train, one_test)
    assert (len(one_train), len(one_test)) == (485, 486) and not set(one_train) & set(one_test)
    assert one_train != sorted_train and split_identities(pids, 2)[0] != one_train
    with pytest.raises(ValueError, match="split_id=-1"):
        split_identities(pids, -1)


def test_the_validation_view_is_carved_from_the_training_identities_only(full):
    test_ids = set(read_dataset("cuhk01", full, split_id=3).table.query("split == 'query'").pid)
    view = read_dataset("cuhk01", full, split_id=3, validation_identities=100).table
    validation = set(view[view.split != "train"].pid)
    assert len(validation) == 100 and not validation & test_ids
    assert not set(view.pid) & test_ids  # the test identities are left out altogether
    assert view[view.split == "train"].pid.nunique() == 385
    with pytest.raises(ValueError, match="validation_identities=485"):
        read_dataset("cuhk01", full, validation_identities=485)


def test_great_expectations_suites_pass_on_the_full_folder_and_counts_fail_on_a_partial_one(full, tmp_path):
    table = read_dataset("cuhk01", full).table
    assert schema_suite(table, "cuhk01").success and queries_suite(table).success
    assert counts_suite(table, OFFICIAL_COUNTS["cuhk01"], 0).success
    partial = read_dataset("cuhk01", campus(tmp_path / "campus", identities=500)).table
    outcome = counts_suite(partial, OFFICIAL_COUNTS["cuhk01"], 0)
    assert not outcome.success and "1940" in outcome.markdown()


def test_an_incomplete_folder_is_named_with_what_its_split_means(tmp_path):
    """500 of 971 identities read as 14 training and 486 test identities: said before anything trains."""
    loaded = read_dataset("cuhk01", campus(tmp_path / "half" / "campus", identities=500))
    finding = next(f for f in loaded.report.findings if f.kind == "incomplete_dataset")
    assert finding.severity == "warning" and finding.count == NUM_IDENTITIES - 500
    assert "500 of CUHK01's 971 identities" in finding.message
    assert "14 training and 486 test identities instead of 485 and 486" in finding.message
    assert finding.examples[0] == "identity 501 missing"
    code = fmn_main(["inspect", "cuhk01", str(tmp_path / "half" / "campus")])
    assert code == 0
    # 20 identities leave 1 training identity: refused while reading, not later by the model's class count
    with pytest.raises(DatasetError, match=r"(?s)at least 2 training identities and split 0 leaves 1.*"
                                           r"20 of CUHK01's 971 identities .* 1 training and 19 test"):
        read_dataset("cuhk01", campus(tmp_path / "twenty" / "campus", identities=20))
    assert fmn_main(["train-stage1", "--dataset", "cuhk01", "--root", str(tmp_path / "twenty"), "--config", "cpu",
                     "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_bad_names_are_reported_and_a_wrong_root_is_explained(tmp_path):
    folder = campus(tmp_path / "campus", identities=4)
    (folder / "0001005.png").write_bytes((folder / "0001001.png").read_bytes())  # image number 5: no camera
    (folder / "person_1.png").write_bytes((folder / "0001001.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="at least 2 training identities") as refused:  # 4 identities: 1 trains
        read_dataset("cuhk01", folder)
    kinds = {f.kind: f.count for f in refused.value.report.findings}
    assert kinds["image_out_of_range"] == 1 and kinds["malformed_filename"] == 1 and kinds["ignored_file"] == 1
    with pytest.raises(DatasetLayoutError, match="0001001.png"):
        read_dataset("cuhk01", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images named like"):
        read_dataset("cuhk01", tmp_path / "empty")


def test_cli_inspect_takes_a_split_id_for_cuhk01_only(full, capsys):
    assert fmn_main(["inspect", "cuhk01", str(full), "--split-id", "2"]) == 0
    assert "cuhk01" in capsys.readouterr().out
    assert fmn_main(["inspect", "market1501", str(full), "--split-id", "2"]) == 2
    assert "--split-id chooses a CUHK01 split" in capsys.readouterr().err


def test_cuhk01_is_a_partition_of_the_graph_and_its_checks_pass(full, tmp_path):
    """dataset_splits materialised for the cuhk01 partition (a root outside data/: versioned by fingerprint),
    then the blocking Great Expectations checks with CUHK01's published counts."""
    project = tmp_path / "project"
    resources = {"paths": ProjectPaths(project_dir=str(project)), "dvc": DVCResource()}
    result = dg.materialize([dataset_splits], partition_key="cuhk01", resources=resources, run_config={
        "ops": {"dataset_splits": {"config": {"root": str(full), "split_id": 1}}}})
    assert result.success
    metadata = result.asset_materializations_for_node("dataset_splits")[0].metadata
    assert metadata["train_images"].value == 1940 and metadata["query_identities"].value == 486
    context = dg.build_op_context(partition_key="cuhk01", resources=resources)
    outcomes = {}
    for definition in CHECKS:
        if "official_counts" in {spec.name for spec in definition.check_specs}:
            out = definition(context)
            outcomes = {r.check_name: r.passed for r in (out if isinstance(out, Iterable) else [out])}
    assert outcomes == dict.fromkeys(("split_table_schema", "images_readable", "identities_disjoint",
                                      "queries_matchable", "official_counts"), True)
    with pytest.raises(dg.Failure, match="split_id=1 chooses a CUHK01 split"):
        dg.materialize([dataset_splits], partition_key="market1501", resources=resources, run_config={
            "ops": {"dataset_splits": {"config": {"root": str(full), "split_id": 1}}}})
