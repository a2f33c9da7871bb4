"""Every asset check seen failing, on realistic bad artifacts, with the message the UI shows.

Each test writes its own project folder (a minimal Market-1501 layout read by the
real reader, checkpoints saved by the real checkpoint code) and runs the checks
through Dagster's direct invocation with a partitioned context (an in-process check-only run of a
partitioned asset is refused by Dagster 1.13: "no PartitionsDefinition shared by all the provided assets").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fmn_assets.assets import CHECKS
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data import read_dataset
from fmn_core.data.schema import relabel
from fmn_core.engine import preset
from fmn_core.engine.checkpoint import build_model, save_checkpoint
from tests.helpers import market

PARTITION = "market1501"
SUITES = ("split_table_schema", "images_readable", "identities_disjoint", "queries_matchable", "official_counts")


def run_checks(project: Path, *names: str) -> dict[str, dg.AssetCheckResult]:
    """Invoke the checks holding ``names`` for the market1501 partition (Dagster's direct invocation); by name.

    The split table's five suites are one step, so naming one of them runs all five.
    """
    context = dg.build_op_context(partition_key=PARTITION, resources={
        "paths": ProjectPaths(project_dir=str(project)), "dvc": DVCResource()})
    results = {}
    for definition in CHECKS:
        specs = {spec.name for spec in definition.check_specs}
        if specs & set(names):
            out = definition(context)
            for result in out if isinstance(out, Iterable) and not isinstance(out, dg.AssetCheckResult) else [out]:
                results[result.check_name or next(iter(specs))] = result
    assert set(names) <= set(results), results
    return results


def text(evaluation: dg.AssetCheckResult) -> str:
    return "\n".join(str(getattr(v, "value", v)) for v in evaluation.metadata.values())


@pytest.fixture
def project(tmp_path) -> Path:
    """A project whose market1501 split table was written by the reader from a small, valid Market folder."""
    project = tmp_path / "project"
    loaded = read_dataset("market1501", market(project / "data" / PARTITION))
    loaded.save(project / "artifacts" / PARTITION / "splits.parquet")
    return project


def test_a_small_valid_market_folder_passes_all_but_the_official_counts(project):
    evaluations = run_checks(project, *SUITES)
    assert {name: e.passed for name, e in evaluations.items()} == {
        "split_table_schema": True, "images_readable": True, "identities_disjoint": True,
        "queries_matchable": True, "official_counts": False}
    counts = text(evaluations["official_counts"])  # a Market-1501 folder with most of its files missing:
    # 4 / 2 / 3 are the files market() writes, 12936 / 3368 / 19732 the counts Market-1501's authors published
    for line in ("train: 4 images, expected 12936", "query: 2 images, expected 3368",
                 "gallery: 3 images, expected 19732"):
        assert line in counts, counts


def _rewrite_splits(project: Path, change) -> None:
    path = project / "artifacts" / PARTITION / "splits.parquet"
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def test_wrong_dtype_fails_the_schema_suite(project):
    def camid_as_float(table: pa.Table) -> pa.Table:
        index = table.column_names.index("camid")
        return table.set_column(index, "camid", pa.compute.add(table.column("camid").cast(pa.float64()), 0.5))

    _rewrite_splits(project, camid_as_float)
    schema = run_checks(project, "split_table_schema")["split_table_schema"]
    assert not schema.passed and "column 'camid' must hold integers" in text(schema) and "1.5" in text(schema)


def test_corrupt_jpeg_fails_images_readable(project):
    victim = sorted((project / "data" / PARTITION / "query").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated after the header: only a full decode notices
    readable = run_checks(project, "images_readable")["images_readable"]
    assert not readable.passed and victim.name in text(readable)


def test_train_test_overlap_fails_identities_disjoint(project):
    def query_pid_into_train(table: pa.Table) -> pa.Table:
        frame = table.to_pandas()
        frame.loc[frame.index[frame.split == "train"][0], "pid"] = int(frame[frame.split == "query"].pid.iloc[0])
        frame["label"] = relabel(frame)  # a consistent table whose identities overlap, as a faulty reader writes
        return pa.Table.from_pandas(frame, preserve_index=False)

    _rewrite_splits(project, query_pid_into_train)
    disjoint = run_checks(project, "identities_disjoint")["identities_disjoint"]
    assert not disjoint.passed and "identity_also_in_train" in text(disjoint)
    assert "query/0003_c1s1_" in text(disjoint)  # the test images of the identity now also in train


def _checkpoint(project: Path, stage: int, num_classes: int = 2, complete: bool = True, nan: bool = False) -> None:
    config = preset("cpu", pretrained="none")
    model = build_model(config, num_classes)
    if nan:
        with torch.no_grad():
            model.grn_classifier.bias[0] = float("nan")
    name = "grn.pt" if stage == 1 else "fmn.pt"
    save_checkpoint(project / "artifacts" / PARTITION / name, model=model, config=config, stage=stage, epoch=1,
                    complete=complete, label_map={i: i + 1 for i in range(num_classes)})


@pytest.mark.parametrize(("kind", "expected"), [
    ("nan", "tensors hold NaN or infinity (e.g. ['grn_classifier.bias'])"),
    ("identities", "5 identities, but the training split has 2"),
    ("unfinished", "stage 1 (complete=False), expected a finished stage 1"),
    ("missing", "checkpoint not found"),
])
def test_grn_checkpoint_check_fails_on_a_bad_checkpoint(project, kind, expected):
    if kind != "missing":
        _checkpoint(project, 1, num_classes=5 if kind == "identities" else 2, complete=kind != "unfinished",
                    nan=kind == "nan")
    check = run_checks(project, "grn_checkpoint_loads")["grn_checkpoint_loads"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert expected in text(check), text(check)


def test_fmn_checkpoint_check_refuses_a_stage_1_file(project):
    _checkpoint(project, 1)
    (project / "artifacts" / PARTITION / "grn.pt").rename(project / "artifacts" / PARTITION / "fmn.pt")
    check = run_checks(project, "fmn_checkpoint_loads")["fmn_checkpoint_loads"]
    assert not check.passed and "expected a finished stage 2" in text(check)


def test_metrics_check_fails_on_an_impossible_value(project):
    row = {"rank1": 120.0, "rank5": 90.0, "rank10": 95.0, "rank20": 99.0, "mAP": 50.0, "mINP": 10.0,
           "valid_queries": 2, "skipped_queries": 0}
    (project / "artifacts" / PARTITION / "metrics.json").write_text(json.dumps({"FMN": row}))
    check = run_checks(project, "metrics_in_range")["metrics_in_range"]
    assert not check.passed
    assert "FMN: a rate outside [0, 100]" in text(check) and "FMN: CMC decreases" in text(check)


def test_descriptor_check_blocks_a_nan_descriptor(project):
    from fmn_core.retrieval import DescriptorTable

    meta = pd.DataFrame({"path": ["/x/a.jpg", "/x/b.jpg"], "pid": [1, 2], "camid": [0, 1], "split": "query"})
    features = torch.ones(2, 4).numpy()
    features[1, 2] = float("nan")
    DescriptorTable(meta, {"fmn": features}).save(project / "artifacts" / PARTITION / "query_descriptors.parquet")
    check = run_checks(project, "query_descriptors_usable")["query_descriptors_usable"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR and "/x/b.jpg" in text(check)
