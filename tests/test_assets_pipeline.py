"""The whole graph materialised in-process on tiny synthetic data, then the faults a user meets."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from dagster._core.definitions.data_version import StaleStatus, extract_data_version_from_entry
from dagster._utils.test.data_versions import get_stale_status_resolver

from fmn_assets import defs
from fmn_assets.assets import ASSETS, CHECKS
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data.synthetic import read_metadata
from fmn_core.engine import load_checkpoint
from fmn_core.retrieval import DescriptorTable, FeatureExtractor
from tests.conftest import write_image
from tests.dagster_project import BIN, REPO, TINY_DATA_CONFIG, TINY_RUN_CONFIG, make_project, run

PIPELINE = defs.resolve_job_def("fmn_pipeline")


def execute(instance, partition: str = "synthetic", selection: list[str] | None = None, config: dict | None = None):
    """The fmn_pipeline job, or a few assets of it (their config only), in this process.

    For the synthetic partition the whole graph is two runs, as in the main job: synthetic_dataset (a partitions
    definition of its own), then fmn_pipeline.
    """
    config = config or {"ops": {**TINY_DATA_CONFIG["ops"], **TINY_RUN_CONFIG["ops"]}}
    if selection is None:
        if partition == "synthetic":
            data = execute(instance, "synthetic", ["synthetic_dataset"], config)
            if not data.success:
                return data
        ops = {name: value for name, value in config["ops"].items() if name != "synthetic_dataset"}
        return PIPELINE.execute_in_process(run_config={"ops": ops}, partition_key=partition, instance=instance,
                                           raise_on_error=False)
    ops = {name: value for name, value in config["ops"].items() if name in selection}
    return dg.materialize([*ASSETS, *CHECKS], selection=selection, partition_key=partition, instance=instance,
                          resources={"paths": ProjectPaths(), "dvc": DVCResource()}, run_config={"ops": ops},
                          raise_on_error=False)


def generated_images(project: Path) -> dict[str, int]:
    """Images per split that the generator says it wrote (its synthetic.json): the counts every table must show."""
    counts = read_metadata(project / "data" / "synthetic")["counts"]
    return {split: counts[split]["images"] for split in ("train", "query", "gallery")}


def materializations(result) -> dict:
    events = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key.to_user_string(): m for m in events}


def failure_messages(result) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


@dataclass(frozen=True)
class Trained:
    """A project folder after the whole graph ran: its DVC remote, its Dagster instance and the run's result."""

    folder: Path
    project: Path
    remote: Path
    instance: dg.DagsterInstance
    result: object


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime, DVC's scratch folder (state, locks) aside."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and ".dvc/tmp" not in p.as_posix()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The shared, read-only result: the graph materialised once on the tiny data.

    Tests only read it; a test that changes files, the remote or the instance takes `own_copy` instead, so any
    test runs alone or in any order. The instance is a persistent one so that copies carry its history.
    """
    folder = tmp_path_factory.mktemp("dagster")
    project, remote = make_project(folder)
    patch = pytest.MonkeyPatch()
    patch.setenv("FMN_PROJECT_DIR", str(project))
    (folder / "instance").mkdir()
    instance = dg.DagsterInstance.local_temp(str(folder / "instance"))
    result = execute(instance)
    yield Trained(folder, project, remote, instance, result)
    instance.dispose()
    patch.undo()


@pytest.fixture(autouse=True)
def _shared_result_stays_read_only(request):
    """Fail a test that changed the shared project, remote or instance: later tests would see its changes."""
    if "trained" not in request.fixturenames:
        yield
        return
    shared = request.getfixturevalue("trained")
    before = _files(shared.project), _files(shared.remote), shared.instance.get_runs_count()
    yield
    after = _files(shared.project), _files(shared.remote), shared.instance.get_runs_count()
    assert after == before, "this test changed the shared result: give it `own_copy`"


@pytest.fixture
def own_copy(trained, tmp_path, monkeypatch) -> Trained:
    """A private copy of the trained project, its DVC remote and its Dagster instance (history included)."""
    folder = tmp_path / "copy"
    shutil.copytree(trained.folder, folder, symlinks=True)
    project, remote = folder / "project", folder / "dvc-remote"
    run([BIN / "dvc", "remote", "modify", "local", "url", remote], project)
    monkeypatch.setenv("FMN_PROJECT_DIR", str(project))
    instance = dg.DagsterInstance.local_temp(str(folder / "instance"))
    yield Trained(folder, project, remote, instance, trained.result)
    instance.dispose()


def test_full_graph_succeeds_with_rich_metadata(trained):
    project, result = trained.project, trained.result
    assert result.success, failure_messages(result)
    mats = materializations(result)
    assert set(mats) == {"dataset_splits", "grn_checkpoint", "fmn_checkpoint", "query_descriptors",
                         "gallery_descriptors", "evaluation_metrics", "onnx_model", "model_card"}
    splits = mats["dataset_splits"].metadata
    images = generated_images(project)
    assert splits["dagster/row_count"].value == sum(images.values())  # junk boxes (pid -1) are not rows
    assert splits["train_images"].value == images["train"]
    assert [c.name for c in splits["dagster/column_schema"].schema.columns][:4] == ["path", "pid", "camid", "split"]
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert splits["git_commit"].value == head and splits["git_dirty"].value is False  # next to the DVC md5
    fmn = mats["fmn_checkpoint"].metadata  # where the synthetic model's mask looks, per detail type
    assert "| shoes |" in fmn["mask_grounding"].value and "untrained MN" in fmn["mask_grounding"].value
    assert fmn["mask_grounding_shoes"].value > 0
    grn = mats["grn_checkpoint"].metadata
    for key in ("path", "size_mb", "dvc_md5", "epochs", "wall_seconds", "images_per_second", "final_loss",
                "final_train_accuracy", "history"):
        assert key in grn, key
    assert grn["epochs"].value == 2 and grn["dvc_pushed"].value is True
    assert mats["query_descriptors"].metadata["dagster/row_count"].value == images["query"]
    columns = {c.name: c.type for c in mats["query_descriptors"].metadata["dagster/column_schema"].schema.columns}
    assert columns["fmn"] == "fixed_size_list<float32, 2560>" and columns["pid"] == "int"
    metrics = mats["evaluation_metrics"].metadata
    table = metrics["results"].value
    for row in ("| GRN |", "| LAN |", "| FMN |", "| FMN + re-ranking |"):
        assert row in table
    for picture in ("cmc_plot", "ranked_lists_plot", "heatmaps_plot", "training_curves_plot"):
        assert "data:image/png;base64," in metrics[picture].value
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks == {name: True for name in ("split_table_schema", "images_readable", "identities_disjoint",
                                              "queries_matchable", "official_counts", "grn_checkpoint_loads",
                                              "fmn_checkpoint_loads", "fmn_mask_alive", "query_descriptors_usable",
                                              "gallery_descriptors_usable", "metrics_in_range",
                                              "onnx_model_matches_checkpoint")}
    assert [r.data["method"] for r in metrics["table_1"].value.records] == ["GRN", "LAN", "FMN", "FMN + re-ranking"]
    assert {c.name: c.type for c in metrics["table_1"].value.schema.columns}["mAP"] == "float"
    assert [r.data["epoch"] for r in grn["history_table"].value.records] == [1, 2]
    assert metrics["seeds"].value == 1 and metrics["training_seed"].value == 0
    assert metrics["fmn_mAP_mean"].value == metrics["fmn_mAP"].value and metrics["fmn_mAP_std"].value == 0
    assert "| FMN + re-ranking |" in metrics["seed_study"].value
    assert (project / "artifacts" / "synthetic" / "pictures" / "cmc.png").stat().st_size > 5000


def test_onnx_model_matches_pytorch_and_is_versioned(trained):
    project, remote, result = trained.project, trained.remote, trained.result
    onnx = materializations(result)["onnx_model"].metadata
    assert onnx["outputs"].value == "fmn, grn, lan" and onnx["batch"].value == "dynamic"
    assert 0 <= onnx["parity_max_abs_fmn"].value <= 1e-4 and onnx["rankings_identical"].value == "8/8"
    md5 = yaml.safe_load((project / "artifacts" / "synthetic" / "fmn.onnx.dvc").read_text())["outs"][0]["md5"]
    assert onnx["dvc_md5"].value == md5 and (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    gallery = DescriptorTable.load(project / "artifacts" / "synthetic" / "gallery_descriptors.parquet")
    extractor = FeatureExtractor(project / "artifacts" / "synthetic" / "fmn.onnx")
    assert extractor.model_hash == gallery.model_hash == onnx["model_hash"].value
    from_onnx = extractor(gallery.meta.path[:5].tolist(), kind="lan").numpy()
    assert np.abs(from_onnx - gallery.features["lan"][:5]).max() < 1e-4


def test_model_card_names_the_data_the_run_used(trained):
    project, result = trained.project, trained.result
    mats = materializations(result)
    card = mats["model_card"].metadata["model_card"].value
    data_md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert mats["dataset_splits"].metadata["data_dvc_md5"].value == data_md5
    assert f"`{data_md5}`" in card and f"`{mats['dataset_splits'].metadata['data_version'].value}`" in card
    assert (project / "artifacts" / "synthetic" / "MODEL_CARD.md").read_text() == card
    train_row = f"| train images | {generated_images(project)['train']} |"
    for needle in ("Let Features Decide for Themselves", train_row, "| FMN + re-ranking |",
                   "## Mask diagnostics", "consented", "fmn train-stage2 --splits", "rankings identical for 8/8",
                   "efficientnet_lite0", "Trained on: "):
        assert needle in card, needle
    fmn = json.loads((project / "artifacts" / "synthetic" / "metrics.json").read_text())["FMN"]
    assert f"| FMN | {fmn['rank1']:.2f} | {fmn['rank5']:.2f} |" in card


def test_dvc_hash_is_the_data_version_and_artifacts_reach_the_remote(trained):
    project, remote, instance = trained.project, trained.remote, trained.instance
    for asset, file in (("grn_checkpoint", "grn.pt"), ("fmn_checkpoint", "fmn.pt"),
                        ("query_descriptors", "query_descriptors.parquet")):
        dvc_file = project / "artifacts" / "synthetic" / f"{file}.dvc"
        md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
        record = instance.get_latest_data_version_record(dg.AssetKey(asset), partition_key="synthetic")
        assert extract_data_version_from_entry(record.event_log_entry).value == md5
        assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    assert (project / "data.dvc").is_file()


def test_fresh_clone_gets_everything_back_with_dvc_pull(own_copy, tmp_path):
    project = own_copy.project  # committed below
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "trained"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", project, clone], tmp_path)
    assert not (clone / "artifacts" / "synthetic" / "fmn.pt").exists()
    run([BIN / "dvc", "pull", "-q"], clone)
    for name in ("fmn.pt", "grn.pt", "gallery_descriptors.parquet"):
        assert (clone / "artifacts" / "synthetic" / name).read_bytes() == \
            (project / "artifacts" / "synthetic" / name).read_bytes()
    assert len(list((clone / "data" / "synthetic" / "bounding_box_train").iterdir())) == \
        generated_images(project)["train"]
    gallery = DescriptorTable.load(clone / "artifacts" / "synthetic" / "gallery_descriptors.parquet")
    assert gallery.image_root == clone / "data" / "synthetic"  # the clone's own images, not the original's
    assert all(Path(p).is_file() for p in gallery.meta["path"])


def test_saved_tables_hold_relative_paths(trained):
    project = trained.project
    folder = project / "artifacts" / "synthetic"
    for name in ("splits.parquet", "query_descriptors.parquet", "gallery_descriptors.parquet"):
        table = pq.read_table(folder / name)
        assert not any(p.startswith("/") for p in table.column("path").to_pylist()), name
        assert table.schema.metadata[b"fmn.image_root_from_table"] == b"../../data/synthetic", name
    assert json.loads((folder / "splits.report.json").read_text())["root"] == "../../data/synthetic"


def test_new_data_makes_downstream_stale(own_copy):
    instance = own_copy.instance  # the run history of the shared result, in a copy this test extends
    config = {"ops": {"synthetic_dataset": {"config": {"preset": "tiny", "seed": 1}}}}
    result = execute(instance, selection=["synthetic_dataset"], config=config)
    assert result.success, failure_messages(result)
    resolver = get_stale_status_resolver(instance, ASSETS)
    assert resolver.get_status(dg.AssetKey("dataset_splits"), "synthetic") == StaleStatus.STALE
    assert execute(instance, selection=["dataset_splits"]).success
    resolver = get_stale_status_resolver(instance, ASSETS)
    assert resolver.get_status(dg.AssetKey("grn_checkpoint"), "synthetic") == StaleStatus.STALE
    assert resolver.get_status(dg.AssetKey("dataset_splits"), "synthetic") == StaleStatus.FRESH
    for selection in (["synthetic_dataset"], ["dataset_splits"]):  # back to the seed-0 data
        assert execute(instance, selection=selection).success
    resolver = get_stale_status_resolver(instance, ASSETS)
    assert resolver.get_status(dg.AssetKey("grn_checkpoint"), "synthetic") == StaleStatus.FRESH


def test_changed_training_code_marks_the_checkpoints_stale(trained):
    instance = trained.instance
    resolver = get_stale_status_resolver(instance, ASSETS)
    assert resolver.get_status(dg.AssetKey("fmn_checkpoint"), "synthetic") == StaleStatus.FRESH
    edited = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="edited"))
              if isinstance(a, dg.AssetsDefinition) and dg.AssetKey("grn_checkpoint") in a.keys else a
              for a in ASSETS]
    resolver = get_stale_status_resolver(instance, edited)
    assert resolver.get_status(dg.AssetKey("grn_checkpoint"), "synthetic") == StaleStatus.STALE
    causes = resolver.get_stale_root_causes(dg.AssetKey("grn_checkpoint"), "synthetic")
    assert any("code version" in cause.reason for cause in causes), causes


def test_raw_data_observation_reports_each_datasets_dvc_version(own_copy):
    from dagster._core.definitions.observe import observe  # not re-exported at the top level

    from fmn_assets.assets import raw_datasets

    instance = own_copy.instance  # an observation is an event in the instance
    result = observe([raw_datasets], instance=instance, resources={"paths": ProjectPaths(), "dvc": DVCResource()})
    assert result.success
    versions = {event.event_specific_data.asset_observation.partition:
                event.event_specific_data.asset_observation.tags["dagster/data_version"]
                for event in result.all_events if event.event_type_value == "ASSET_OBSERVATION"}
    # a dataset without files gets no observation: it stays missing, so automation requests nothing for it
    assert set(versions) == {"synthetic"} and len(versions["synthetic"]) == 32  # an md5


def test_training_step_can_run_under_torchrun(own_copy):
    project, instance = own_copy.project, own_copy.instance
    config = {"ops": {"grn_checkpoint": {"config": {**TINY_RUN_CONFIG["ops"]["grn_checkpoint"]["config"],
                                                    "processes": 2, "device": "cpu", "epochs": 1}}}}
    result = execute(instance, selection=["grn_checkpoint"], config=config)
    assert result.success, failure_messages(result)
    meta = materializations(result)["grn_checkpoint"].metadata
    assert meta["device"].value == "torchrun" and meta["epochs"].value == 1
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("stage 1 epoch 1/1: ") and "(rank 0 of 2)" in m for m in messages), messages[-20:]
    state = load_checkpoint(project / "artifacts" / "synthetic" / "grn.pt")
    # each of the 2 ranks takes its half of the train images and drops its last partial batch of 16
    per_rank = generated_images(project)["train"] // 2
    assert state["complete"] and state["history"][0]["images"] == 2 * (per_rank // 16) * 16


def test_failing_validation_stops_training(own_copy):
    project, instance = own_copy.project, own_copy.instance
    custom = project / "data" / "custom"
    lines = ["path,pid,camid,split"]
    for i in range(4):
        for pid in (1, 2):
            lines.append(f"{write_image(custom / f't{pid}_{i}.jpg', seed=i)},{pid},{i % 2},train")
    lines.append(f"{write_image(custom / 'q.jpg')},7,0,query")
    lines.append(f"{write_image(custom / 'g.jpg')},7,0,gallery")  # only under the query's own camera
    lines.append(f"{write_image(custom / 'g2.jpg')},8,1,gallery")
    (custom / "manifest.csv").write_text("\n".join(lines) + "\n")
    result = execute(instance, partition="custom")
    assert not result.success
    mats = materializations(result)
    assert "dataset_splits" in mats and "grn_checkpoint" not in mats
    failed = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
              and not e.event_specific_data.passed]
    assert [c.check_name for c in failed] == ["queries_matchable"]
    report = failed[0].metadata["great_expectations"].value
    assert "has_cross_camera_gallery_match" in report and "q.jpg" in report
    assert not (project / "artifacts" / "custom" / "grn.pt").exists()


def test_table_5_masks_another_layer_through_the_asset_config(trained, own_copy):
    project, copy = trained.project, own_copy.project
    result = execute(own_copy.instance, selection=["fmn_checkpoint"],
                     config={"ops": {"fmn_checkpoint": {"config": {"epochs": 1, "lr": 0.02, "masked_layer": "res3"}}}})
    assert result.success, failure_messages(result)
    assert load_checkpoint(copy / "artifacts" / "synthetic" / "grn.pt")["config"]["masked_layer"] == "res2"
    assert load_checkpoint(copy / "artifacts" / "synthetic" / "fmn.pt")["config"]["masked_layer"] == "res3"
    assert load_checkpoint(project / "artifacts" / "synthetic" / "fmn.pt")["config"]["masked_layer"] == "res2"


def test_missing_and_misplaced_datasets_fail_clearly(own_copy):
    project, instance = own_copy.project, own_copy.instance
    result = execute(instance, partition="market1501", selection=["dataset_splits"])
    assert not result.success
    assert "expected the Market-1501 folders" in failure_messages(result)
    assert str(project / "data" / "market1501") in failure_messages(result)
    (project / "data" / "cuhk03_detected").mkdir(parents=True)
    result = execute(instance, partition="cuhk03_detected", selection=["dataset_splits"])
    assert "no cuhk-03.mat under" in failure_messages(result)


def test_corrupt_checkpoint_fails_clearly_and_loses_nothing(own_copy):
    project, instance = own_copy.project, own_copy.instance
    folder = project / "artifacts" / "synthetic"
    fmn_before = (folder / "fmn.pt").read_bytes()
    good = (folder / "grn.pt").read_bytes()
    (folder / "grn.pt").write_bytes(good[: len(good) // 3])
    result = execute(instance, selection=["fmn_checkpoint"])
    assert not result.success
    assert "truncated, corrupt" in failure_messages(result) and "Materialize grn_checkpoint again" in \
        failure_messages(result)
    assert (folder / "fmn.pt").read_bytes() == fmn_before


def test_unreachable_remote_keeps_the_artifact_and_the_next_run_pushes_it(own_copy):
    project, remote, instance = own_copy.project, own_copy.remote, own_copy.instance
    run([BIN / "dvc", "remote", "modify", "local", "url", "/proc/no-such-remote"], project)
    try:
        result = execute(instance, selection=["grn_checkpoint"])
        assert result.success, failure_messages(result)
        meta = materializations(result)["grn_checkpoint"].metadata
        assert meta["dvc_pushed"].value is False and "push" in meta["dvc_push"].value
        assert "/proc/no-such-remote" in meta["dvc_push"].value  # DVC's reason
        assert load_checkpoint(project / "artifacts" / "synthetic" / "grn.pt")["complete"]
        md5 = meta["dvc_md5"].value
        assert not (remote / "files" / "md5" / md5[:2] / md5[2:]).exists()
    finally:
        run([BIN / "dvc", "remote", "modify", "local", "url", remote], project)
    assert not (project / ".dvc" / "tmp" / "fmn-pending-push.json").exists()  # no queue: DVC knows what is missing
    result = execute(instance, selection=["fmn_checkpoint"])
    assert result.success and materializations(result)["fmn_checkpoint"].metadata["dvc_pushed"].value is True
    # the step pushes every pointer of the partition, so the checkpoint the failed push left behind went out too
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    status = run([BIN / "dvc", "status", "--cloud", "--json", *sorted(
        str(p.relative_to(project)) for p in (project / "artifacts" / "synthetic").glob("*.dvc"))], project)
    assert json.loads(status.stdout) == {}  # nothing of the partition is missing from the remote


def test_same_partition_twice_at_once_is_refused(own_copy):
    project, instance = own_copy.project, own_copy.instance
    before = (project / "artifacts" / "synthetic" / "grn.pt").stat().st_mtime_ns
    with ProjectPaths().exclusive("synthetic", "another run"):
        result = execute(instance, selection=["grn_checkpoint"])
    assert not result.success
    assert "being written by another run" in failure_messages(result)
    assert (project / "artifacts" / "synthetic" / "grn.pt").stat().st_mtime_ns == before


def test_two_processes_on_one_partition_never_corrupt_each_other(own_copy, tmp_path):
    """Two `dagster asset materialize` processes (outside any run queue) train the same partition at once.

    Each has an instance of its own (as two users or machines sharing the project folder would): only the
    partition's file lock stands between them.
    """
    copy = own_copy.project
    config = tmp_path / "grn.yaml"  # long enough (6 epochs) that the two runs overlap
    config.write_text(yaml.safe_dump({"ops": {"grn_checkpoint": {"config": {"batch_size": 16, "epochs": 6,
                                                                            "lr": 0.02}}}}))
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "fmn_assets", "--select", "grn_checkpoint",
               "--partition", "synthetic", "-c", str(config)]
    processes = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path / name), "FMN_PROJECT_DIR": str(copy),
               "DAGSTER_DISABLE_TELEMETRY": "1"}
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    codes = [p.returncode for p in processes]
    assert 0 in codes, outputs[0][-2000:] + outputs[1][-2000:]
    for code, output in zip(codes, outputs, strict=True):
        if code != 0:  # the loser stops at once and says why; it never touched the winner's files
            assert "is being written by grn_checkpoint" in output, output[-3000:]
    grn = copy / "artifacts" / "synthetic" / "grn.pt"
    md5 = yaml.safe_load((copy / "artifacts" / "synthetic" / "grn.pt.dvc").read_text())["outs"][0]["md5"]
    assert hashlib.md5(grn.read_bytes()).hexdigest() == md5  # the file is exactly what DVC versioned
    state = load_checkpoint(grn)
    assert state["complete"] and state["epoch"] == 6
    assert not (copy / "artifacts" / "synthetic" / "grn.partial.pt").exists()


def _step_process(cli: subprocess.Popen, deadline: float):
    """The process running the training step under `dagster asset materialize` (the multiprocess executor's child)."""
    import psutil

    while time.time() < deadline:
        for child in psutil.Process(cli.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):  # not the resource tracker
                    return child
        time.sleep(0.2)
    raise AssertionError("no step process appeared")


def test_sigkilled_training_step_is_retried_and_resumes_to_the_uninterrupted_weights(own_copy, tmp_path,
                                                                                    monkeypatch):
    """A real SIGKILL of the step process mid-stage; the step retry resumes from the partial checkpoint."""
    from fmn_core.data import load_split_table
    from fmn_core.engine import train_stage1

    copy = own_copy.project
    artifacts = copy / "artifacts" / "synthetic"
    (artifacts / "grn.pt").unlink()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    grn_config = {"batch_size": 16, "epochs": 3, "lr": 0.02, "device": "cpu"}
    config = tmp_path / "grn.yaml"
    config.write_text(yaml.safe_dump({"ops": {"grn_checkpoint": {"config": grn_config}}}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(copy), "DAGSTER_DISABLE_TELEMETRY": "1",
           "FMN_EXECUTOR": "multiprocess", "FMN_RETRY_DELAY_S": "1"}
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "fmn_assets", "--select", "grn_checkpoint",
               "--partition", "synthetic", "-c", str(config)]
    cli = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (artifacts / "grn.partial.pt").exists():  # at least one epoch done, the next one running
        assert time.time() < deadline and cli.poll() is None, "no partial checkpoint appeared"
        time.sleep(0.1)
    _step_process(cli, deadline).send_signal(signal.SIGKILL)
    output = cli.communicate(timeout=600)[0]
    # the step's retry policy re-runs it in the same run (what the UI shows as a retried step) ...
    assert cli.returncode == 0, output[-3000:]
    assert 'Execution of step "grn_checkpoint" failed and has requested a retry' in output
    assert 'Started re-execution (attempt # 2) of step "grn_checkpoint"' in output
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places the storage under $DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as instance:
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("grn_checkpoint"), asset_partitions=["synthetic"]), limit=1).records[0]
        # the run's event log, which the UI's run page draws: the step up for retry, then restarted
        kinds = [e.dagster_event.event_type_value for e in instance.all_logs(record.run_id) if e.dagster_event]
    assert "STEP_UP_FOR_RETRY" in kinds and "STEP_RESTARTED" in kinds, kinds
    # ... which resumes from the partial checkpoint the killed attempt left
    assert record.asset_materialization.metadata["resumed_from_epoch"].value >= 1
    assert not (artifacts / "grn.partial.pt").exists() and load_checkpoint(artifacts / "grn.pt")["complete"]
    table = load_split_table(artifacts / "splits.parquet")
    from fmn_assets.configs import GRNTrainingConfig

    uninterrupted = train_stage1(table, GRNTrainingConfig(**grn_config).train_config(), tmp_path / "reference",
                                 progress=False)
    resumed = load_checkpoint(artifacts / "grn.pt")["model"]
    reference = load_checkpoint(uninterrupted.checkpoint)["model"]
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), "resumed weights differ"


def _resave_with(path, **config_changes) -> None:
    state = load_checkpoint(path)
    torch.save({**state, "config": {**state["config"], **config_changes}}, path)


def test_seed_study_pools_the_seeds_of_one_recipe_and_nothing_else(own_copy):
    checkpoint = own_copy.project / "artifacts" / "synthetic" / "fmn.pt"
    instance = own_copy.instance

    def evaluate() -> dict:
        result = execute(instance, selection=["evaluation_metrics"])
        assert result.success, failure_messages(result)
        return materializations(result)["evaluation_metrics"].metadata

    first = evaluate()
    _resave_with(checkpoint, seed=7)  # the same weights under another seed: equal scores, so std 0
    second = evaluate()
    assert second["seeds"].value == 2 and second["training_seed"].value == 7
    assert "training seeds: 0, 7" in second["seed_study"].value
    assert second["fmn_mAP_mean"].value == first["fmn_mAP"].value and second["fmn_mAP_std"].value == 0
    _resave_with(checkpoint, seed=8, margin=0.5)  # another recipe: a study of its own
    third = evaluate()
    assert third["seeds"].value == 1 and third["recipe_fingerprint"].value != second["recipe_fingerprint"].value


def test_missing_dvc_repository_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path))
    result = execute(dg.DagsterInstance.ephemeral(), selection=["synthetic_dataset"])
    assert "is not a DVC repository" in failure_messages(result)
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)


def test_synthetic_splits_wait_for_the_generated_data(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path / "project"))
    result = execute(dg.DagsterInstance.ephemeral(), selection=["dataset_splits"])
    assert not result.success  # dataset_splits reads; it never generates into its own input
    assert "materialize synthetic_dataset" in failure_messages(result)
    assert not (tmp_path / "project" / "data").exists()
