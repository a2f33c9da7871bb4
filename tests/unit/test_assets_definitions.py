"""The Definitions object: graph shape, partitions, config, automation, Kubernetes configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from fmn_assets import defs
from fmn_assets.partitions import DATASETS
from fmn_assets.resources import ProjectPaths
from tests.helpers import BIN, REPO, run

GROUPS = {"dataset_splits": "data", "grn_checkpoint": "training", "fmn_checkpoint": "training",
          "query_descriptors": "retrieval", "gallery_descriptors": "retrieval", "evaluation_metrics": "evaluation"}


def test_assets_groups_partitions_and_owners():
    graph = defs.resolve_asset_graph()
    for name, group in GROUPS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == group, name
        assert node.partitions_def.get_partition_keys() == list(DATASETS)
        assert "team:reid" in node.owners and node.description
        assert node.kinds, name
    assert dg.AssetKey("raw_datasets") in graph.get_all_asset_keys()
    # the synthetic data is raw data like the others: one partitions definition, so one run builds a whole partition
    assert set(graph.get(dg.AssetKey("dataset_splits")).parent_keys) == {dg.AssetKey("raw_datasets")}
    pipeline = defs.resolve_job_def("fmn_pipeline").asset_layer.selected_asset_keys
    assert pipeline == graph.materializable_asset_keys and dg.AssetKey("raw_datasets") not in pipeline
    assert set(graph.get(dg.AssetKey("grn_checkpoint")).parent_keys) == {dg.AssetKey("dataset_splits")}
    assert set(graph.get(dg.AssetKey("evaluation_metrics")).parent_keys) >= {
        dg.AssetKey("query_descriptors"), dg.AssetKey("gallery_descriptors")}


def test_blocking_checks_and_training_step_settings():
    graph = defs.resolve_asset_graph()
    specs = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    for name in ("split_table_schema", "images_readable", "identities_disjoint", "queries_matchable",
                 "official_counts", "grn_checkpoint_loads", "fmn_checkpoint_loads"):
        assert specs[name].blocking, name
    assert "metrics_in_range" in specs
    job = defs.resolve_job_def("fmn_pipeline")
    for step in ("grn_checkpoint", "fmn_checkpoint", "descriptor_tables"):
        node = job.graph.node_named(step).definition
        assert node.pool == "gpu"
        k8s = json.loads(node.tags["dagster-k8s/config"])  # op tags are stored JSON-encoded
        # the documented policy: one GPU per step unless a run's `processes` ask for more
        assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the README's policy: a training step is retried twice (a preempted node, a killed process)
    assert job.graph.node_named("grn_checkpoint").definition.retry_policy.max_retries == 2


def test_wrong_config_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path))
    job = defs.resolve_job_def("fmn_pipeline")
    for bad, field in (({"overrides": {"arch": "vgg16"}}, "arch"), ({"overrides": {"stage1_epochz": 2}}, "epochz"),
                       ({"overrides": {"batch_size": "large"}}, "batch_size")):
        with pytest.raises(dg.DagsterInvalidConfigError, match=f"(?s)grn_checkpoint.*{field}|{field}.*grn_checkpoint"):
            job.execute_in_process(run_config={"ops": {"grn_checkpoint": {"config": bad}}}, partition_key="synthetic")
    with pytest.raises(dg.DagsterInvalidConfigError, match="(?s)dataset_splits.*synthetic_preset"):
        job.execute_in_process(run_config={"ops": {"dataset_splits": {"config": {"synthetic_preset": "huge"}}}},
                               partition_key="synthetic")
    assert list(tmp_path.iterdir()) == []  # nothing was generated, trained or written


def test_paper_job_carries_the_paper_recipe():
    from fmn_assets.automation import fmn_pipeline_paper
    from fmn_assets.configs import GRNTrainingConfig

    assert fmn_pipeline_paper.config["ops"]["grn_checkpoint"]["config"]["recipe"] == "paper"
    assert defs.resolve_job_def("fmn_pipeline_paper").partitions_def.get_partition_keys() == list(DATASETS)

    paper = GRNTrainingConfig(recipe="paper").train_config()
    assert (paper.arch, paper.input_height, paper.stage1_lr, paper.stage1_lr_drop_epoch) == ("resnet50", 224, 0.1, 20)


def test_automation_observes_on_cron_and_rebuilds_only_after_changes():
    graph = defs.resolve_asset_graph()
    conditions = {key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()}
    assert conditions["raw_datasets"].get_label() == "observe on cron"
    for name in ("dataset_splits", "grn_checkpoint", "fmn_checkpoint", "query_descriptors", "evaluation_metrics"):
        assert conditions[name].get_label() == "eager, after upstream blocking checks pass", name
    sensor = defs.resolve_sensor_def("fmn_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED and not defs.schedules
    code = "import fmn_assets.automation as a; print(a.OBSERVE_CRON, a.EVALUATION_SECONDS)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "FMN_OBSERVE_CRON": "*/5 * * * *", "FMN_AUTOMATION_SECONDS": "7"})
    assert shown.stdout.split() == ["*/5", "*", "*", "*", "*", "7"]


def test_workspace_loads_with_the_real_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = run([BIN / "dagster", "definitions", "validate", "-w", REPO / "workspace.yaml"], REPO, env=env)
    assert "Validation successful" in result.stdout + result.stderr
    # one entry point: plain `dagster ...` in the repository finds workspace.yaml; pyproject names no second one
    result = run([BIN / "dagster", "definitions", "validate"], REPO, env=env)
    assert "Validation successful for code location fmn_assets:defs" in result.stdout + result.stderr
    assert "[tool.dagster]" not in (REPO / "pyproject.toml").read_text()


def test_code_version_follows_the_source(tmp_path, monkeypatch):
    from fmn_assets.code_versions import TRAINING_CODE, code_version, source_digest

    package = tmp_path / "fmn_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layer.py").write_text("WIDTH = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version("fmn_probe_pkg")
    assert code_version("fmn_probe_pkg") == before and len(before) == 12
    (package / "layer.py").write_text("WIDTH = 2\n")
    assert code_version("fmn_probe_pkg") != before
    assert source_digest("fmn_probe_pkg") != source_digest("fmn_probe_pkg.layer")
    assert defs.resolve_assets_def("grn_checkpoint").code_versions_by_key[dg.AssetKey("grn_checkpoint")] \
        == TRAINING_CODE


def test_project_paths_own_every_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path / "from-env"))
    assert ProjectPaths().root == (tmp_path / "from-env").resolve()  # empty field: the environment variable
    paths = ProjectPaths(project_dir=str(tmp_path / "configured"))
    folder = tmp_path / "configured" / "artifacts" / "market1501"
    assert paths.splits("market1501") == folder / "splits.parquet" and folder.is_dir()
    assert (paths.checkpoint("market1501", 1).name, paths.checkpoint("market1501", 2).name) == ("grn.pt", "fmn.pt")
    assert paths.descriptors("market1501", "query") == folder / "query_descriptors.parquet"
    assert paths.metrics_log("market1501", 2) == folder / "stage2_metrics.jsonl"
    shown = {name: field.description for name, field in ProjectPaths.model_fields.items()}
    assert "FMN_PROJECT_DIR" in shown["project_dir"]  # what the UI shows for the resource
