"""The Definitions object: graph shape, partitions, config, automation, Kubernetes configuration."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import dagster as dg
import pytest
import yaml

from fmn_assets import defs
from fmn_assets.automation import data_version_sensor, weekly_retraining
from fmn_assets.partitions import DATASETS
from fmn_assets.resources import DVCResource, ProjectPaths
from tests.dagster_project import BIN, REPO, make_project, run

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
        assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job.graph.node_named("grn_checkpoint").definition.retry_policy.max_retries == 2


def test_wrong_config_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path))
    job = defs.resolve_job_def("fmn_pipeline")
    bad = {"ops": {"grn_checkpoint": {"config": {"preset": "gpu"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="grn_checkpoint.*preset"):
        job.execute_in_process(run_config=bad, partition_key="synthetic")
    with pytest.raises(dg.DagsterInvalidConfigError, match="synthetic_preset"):
        job.execute_in_process(run_config={"ops": {"dataset_splits": {"config": {"synthetic_preset": "huge"}}}},
                               partition_key="synthetic")
    assert list(tmp_path.iterdir()) == []  # nothing was generated, trained or written


def test_paper_job_carries_the_paper_recipe():
    from fmn_assets.automation import fmn_pipeline_paper
    from fmn_assets.configs import GRNTrainingConfig, TrainingPreset

    assert fmn_pipeline_paper.config["ops"]["grn_checkpoint"]["config"]["preset"] == "paper"
    assert defs.resolve_job_def("fmn_pipeline_paper").partitions_def.get_partition_keys() == list(DATASETS)

    paper = GRNTrainingConfig(preset=TrainingPreset.paper).train_config()
    assert (paper.arch, paper.input_height, paper.stage1_lr, paper.stage1_lr_drop_epoch) == ("resnet50", 224, 0.1, 20)


def test_schedule_is_weekly_and_stopped_until_started(tmp_path, monkeypatch):
    assert weekly_retraining.cron_schedule == "0 3 * * 1"
    assert weekly_retraining.default_status == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path))
    (tmp_path / "data" / "market1501").mkdir(parents=True)
    tick = datetime.datetime(2026, 11, 23, 3, 0, tzinfo=datetime.UTC)
    with dg.build_schedule_context(resources={"paths": ProjectPaths()}, scheduled_execution_time=tick) as context:
        requests = weekly_retraining(context)
    assert sorted(r.partition_key for r in requests) == ["market1501", "synthetic"]
    assert requests[0].run_key.endswith("2026-11-23T03:00")
    code = ("import fmn_assets.automation as a; print(a.weekly_retraining.cron_schedule)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "FMN_RETRAIN_CRON": "0 4 * * *"}, check=True)
    assert out.stdout.strip() == "0 4 * * *"


def test_sensor_requests_retraining_when_the_dvc_version_changes(tmp_path, monkeypatch):
    project, _ = make_project(tmp_path)
    monkeypatch.setenv("FMN_PROJECT_DIR", str(project))
    (project / "data" / "synthetic").mkdir(parents=True)
    (project / "data" / "synthetic" / "a.txt").write_text("one")
    (project / "data" / "market1501").mkdir()
    (project / "data" / "market1501" / "b.txt").write_text("two")
    run([BIN / "dvc", "add", "-q", "data"], project)
    resources = {"paths": ProjectPaths(), "dvc": DVCResource()}
    first = data_version_sensor(dg.build_sensor_context(resources=resources))
    assert first.run_requests == [] and set(json.loads(first.cursor)) == {"synthetic", "market1501"}
    again = data_version_sensor(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert again.run_requests == []
    (project / "data" / "market1501" / "b.txt").write_text("changed")
    run([BIN / "dvc", "add", "-q", "data"], project)
    changed = data_version_sensor(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert [r.partition_key for r in changed.run_requests] == ["market1501"]
    assert changed.run_requests[0].tags["fmn/trigger"] == "data-version"


def test_kubernetes_configuration_loads():
    """deploy/k8s: the same Definitions with the k8s executor; the instance file validates."""
    code = ("import fmn_assets; d = fmn_assets.defs; print(d.resolve_job_def('fmn_pipeline').executor_def.name); "
            "print(sorted(k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "FMN_EXECUTOR": "k8s"})
    executor, keys = out.stdout.strip().splitlines()[-2:]
    assert executor == "k8s"
    assert keys == str(sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()))
    instance = yaml.safe_load((REPO / "deploy" / "k8s" / "dagster-instance.yaml").read_text())
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    launcher = instance["run_launcher"]
    assert launcher["class"] == "K8sRunLauncher"
    assert process_config(K8sRunLauncher.config_type(), launcher["config"]).success
    values = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert {"name": "FMN_EXECUTOR", "value": "k8s"} in deployment["env"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "fmn_assets"]


def test_workspace_loads_with_the_real_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = run([BIN / "dagster", "definitions", "validate", "-w", REPO / "workspace.yaml"], REPO, env=env)
    assert "Validation successful" in result.stdout + result.stderr
