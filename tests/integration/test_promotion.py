"""Retraining never ships a worse model: the promotion gate with a real Dagster instance and daemon, real DVC.

The shared history (module fixture, read-only): three trainings of the tiny synthetic data in one project,
each a whole `fmn_pipeline` run:

1. a first model: promoted, as nothing was deployed;
2. a deliberately weaker one (random initial weights, learning rate 1e-6): kept out, and the deployed files and
   their DVC pointer stay byte-identical;
3. a better one (more epochs from ImageNet weights): promoted.

A test that changes anything takes a private copy of the project, its DVC remote and its instance.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from fmn_assets import defs
from fmn_assets.promotion import file_md5
from fmn_core.data import load_split_table
from fmn_core.data.schema import split_table_fingerprint
from fmn_core.retrieval import extract_descriptors
from fmn_core.retrieval.results import evaluate_descriptors
from tests.helpers import (
    BIN,
    REPO,
    TINY_DATA_CONFIG,
    TINY_RUN_CONFIG,
    default_signals,
    make_project,
    run,
    stop_process_group,
)

PIPELINE = defs.resolve_job_def("fmn_pipeline")
WEAK = {"grn_checkpoint": {"pretrained": "none", "stage1_epochs": 1, "stage1_lr": 1e-6},
        "fmn_checkpoint": {"stage2_lr": 1e-6}}
BETTER = {"grn_checkpoint": {"stage1_epochs": 4}, "fmn_checkpoint": {"stage2_epochs": 2}}


def run_config(training: dict | None = None, data: dict | None = None) -> dict:
    """The tiny run config with some training overrides changed (and the data step's config replaced)."""
    ops = copy.deepcopy({**TINY_DATA_CONFIG["ops"], **TINY_RUN_CONFIG["ops"]})
    for step, overrides in (training or {}).items():
        ops[step]["config"]["overrides"].update(overrides)
    if data is not None:
        ops["dataset_splits"] = {"config": data}
    return {"ops": ops}


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def decisions(project: Path, partition: str = "synthetic") -> list[dict]:
    path = project / "artifacts" / partition / "promotions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def deployed_metadata(result) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == "deployed_model":
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise AssertionError("deployed_model was not materialized")


def check_passed(result, name: str) -> bool:
    return any(e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == name
               and e.event_specific_data.passed for e in result.all_events)


@dataclass
class History:
    folder: Path
    project: Path
    remote: Path
    home: Path
    fmn_md5: list[str]  # fmn.pt of each of the three trainings
    deployed: list[dict[str, str]]  # deployed/ after each training
    pointer: list[str]  # deployed.dvc after each training
    results: list

    @property
    def artifacts(self) -> Path:
        return self.project / "artifacts" / "synthetic"


def _instance(home: Path, monkeypatch) -> dg.DagsterInstance:
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the project's dagster.yaml places storage under it
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("promotion")
    project, remote = make_project(folder)
    home = folder / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    patch = pytest.MonkeyPatch()
    patch.setenv("FMN_PROJECT_DIR", str(project))
    artifacts = project / "artifacts" / "synthetic"
    made = History(folder, project, remote, home, [], [], [], [])
    with _instance(home, patch) as instance:
        for training in ({}, WEAK, BETTER):
            result = PIPELINE.execute_in_process(run_config=run_config(training), partition_key="synthetic",
                                                 instance=instance, raise_on_error=False)
            assert result.success, [str(e.event_specific_data.error.message) for e in result.all_events
                                    if e.event_type_value == "STEP_FAILURE"]
            made.fmn_md5.append(file_md5(artifacts / "fmn.pt"))
            made.deployed.append(snapshot(artifacts / "deployed"))
            made.pointer.append((artifacts / "deployed.dvc").read_text())
            made.results.append(deployed_metadata(result) | {"whole": check_passed(result, "deployed_model_is_whole")})
    yield made
    patch.undo()


@pytest.fixture
def own_copy(history, tmp_path, monkeypatch) -> History:
    folder = tmp_path / "copy"
    shutil.copytree(history.folder, folder, symlinks=True)
    project, remote, home = folder / "project", folder / "dvc-remote", folder / "home"
    run([BIN / "dvc", "remote", "modify", "local", "url", remote], project)
    monkeypatch.setenv("FMN_PROJECT_DIR", str(project))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return History(folder, project, remote, home, list(history.fmn_md5), list(history.deployed),
                   list(history.pointer), history.results)


def test_first_promoted_weaker_kept_out_byte_identical_better_promoted(history):
    first, weak, better = decisions(history.project)
    assert (first["decision"], first["kind"]) == ("promoted", "first")
    assert (weak["decision"], weak["kind"]) == ("kept", "gate") and "worse than the deployed model" in weak["reason"]
    assert (better["decision"], better["kind"]) == ("promoted", "gate")
    # the weaker model changed nothing that users read: files and DVC pointer byte for byte
    assert history.deployed[1] == history.deployed[0] and history.pointer[1] == history.pointer[0]
    assert history.deployed[0]["fmn.pt"] == history.fmn_md5[0] != history.fmn_md5[1]
    assert history.deployed[2]["fmn.pt"] == history.fmn_md5[2]
    # both models scored on the same split table: the comparison is the two rows side by side
    assert weak["challenger"]["files"]["checkpoint"] == history.fmn_md5[1]
    assert weak["champion_before"]["files"]["checkpoint"] == history.fmn_md5[0]
    rows = {row["score"]: row for row in weak["comparison"]}
    assert set(rows) == {"FMN rank1", "FMN mAP"}
    assert any(not row["within_tolerance"] and row["difference"] < -weak["tolerance"] for row in rows.values())
    assert all(row["challenger"] == round(weak["challenger"]["scores"]["FMN"][row["score"].split()[1]], 2)
               for row in rows.values())
    assert better["champion_before"]["scores"] == weak["champion_before"]["scores"]  # same split, same champion
    # the metadata the UI shows: a typed table and the decision in words
    assert [r["decision"] for r in history.results] == ["promoted", "kept", "promoted"]
    assert all(r["whole"] for r in history.results)
    table = history.results[1]["comparison"]
    assert [c.name for c in table.schema.columns][:4] == ["score", "champion", "challenger", "difference"]
    assert history.results[1]["deployed_fmn_pt_md5"] == history.fmn_md5[0]
    # the history is versioned by DVC beside the deployed folder's pointer
    pointer = yaml.safe_load((history.artifacts / "promotions.jsonl.dvc").read_text())["outs"][0]
    assert pointer["md5"] == file_md5(history.artifacts / "promotions.jsonl")
    assert (history.remote / "files" / "md5" / pointer["md5"][:2] / pointer["md5"][2:]).is_file()


def test_a_new_data_version_re_evaluates_the_champion_on_the_new_split(own_copy):
    old_fingerprint = decisions(own_copy.project)[-1]["split_fingerprint"]
    with dg.DagsterInstance.from_config(str(own_copy.home)) as instance:
        result = PIPELINE.execute_in_process(
            run_config=run_config(WEAK, data={"synthetic_preset": "tiny", "synthetic_seed": 1}),
            partition_key="synthetic", instance=instance, raise_on_error=False)
    assert result.success
    decision = decisions(own_copy.project)[-1]
    table = load_split_table(own_copy.artifacts / "splits.parquet")
    assert decision["split_fingerprint"] == split_table_fingerprint(table) != old_fingerprint
    # the champion was scored on the new split table, not taken from the old one's record
    deployed = own_copy.artifacts / "deployed"
    descriptors, _ = extract_descriptors(deployed / "fmn.pt", table, progress=False)
    expected = {row: {k: round(float(v), 4) for k, v in r.summary().items()}
                for row, r in evaluate_descriptors(descriptors).items()}
    assert decision["champion_before"]["scores"] == expected
    assert decision["champion_before"]["scores"] != decisions(own_copy.project)[-2]["champion_after"]["scores"]
    assert decision["decision"] == "kept" and decision["champion_after"]["files"]["checkpoint"] == own_copy.fmn_md5[2]
    # the kept champion's gallery now matches the data users search
    assert json.loads((deployed / "champion.json").read_text())["split_fingerprint"] == decision["split_fingerprint"]
    assert "gallery descriptors were re-extracted" in decision["reason"]


def _daemon(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "fmn_assets"], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=default_signals)


def _env(history: History, **more: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(history.home), "FMN_PROJECT_DIR": str(history.project),
            "DAGSTER_DISABLE_TELEMETRY": "1", "FMN_EXECUTOR": "in_process", **more}


def test_operators_roll_back_through_the_queue_and_promote_by_hand(own_copy, tmp_path):
    env = _env(own_copy)
    rollback = tmp_path / "rollback.yaml"
    rollback.write_text(yaml.safe_dump({"ops": {"deployed_model": {"config": {
        "action": "rollback", "operator": "alice", "reason": "the new model misses people in backpacks"}}}}))
    launched = run([BIN / "dagster", "job", "launch", "-m", "fmn_assets", "-j", "fmn_deploy", "-c", rollback,
                    "--tags", '{"dagster/partition": "synthetic"}'], REPO, env=env)
    assert launched.returncode == 0
    with dg.DagsterInstance.from_config(str(own_copy.home)) as instance:
        queued = [r for r in instance.get_runs() if r.job_name == "fmn_deploy"]
        assert [r.status for r in queued] == [dg.DagsterRunStatus.QUEUED]
        daemon = _daemon(env, tmp_path / "daemon.log")
        try:
            deadline = time.time() + 600
            while not instance.get_run_by_id(queued[0].run_id).is_finished:
                assert daemon.poll() is None and time.time() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
        finally:
            stop_process_group(daemon)
        assert instance.get_run_by_id(queued[0].run_id).status == dg.DagsterRunStatus.SUCCESS
    decision = decisions(own_copy.project)[-1]
    assert (decision["decision"], decision["kind"], decision["operator"]) == ("promoted", "rollback", "alice")
    assert decision["reason"].startswith("the new model misses people in backpacks")
    deployed = own_copy.artifacts / "deployed"
    assert snapshot(deployed)["fmn.pt"] == own_copy.fmn_md5[0]  # the champion before the current one
    assert file_md5(deployed / "fmn.onnx") == own_copy.deployed[0]["fmn.onnx"]

    # by hand, through the CLI: the kept-out weaker candidate, named by its fmn.pt md5 from the history
    promote = tmp_path / "promote.yaml"
    promote.write_text(yaml.safe_dump({"ops": {"deployed_model": {"config": {
        "action": "promote", "candidate": own_copy.fmn_md5[1], "operator": "bob", "reason": "A/B test arm"}}}}))
    run([BIN / "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "deployed_model", "--partition",
         "synthetic", "-c", promote], REPO, env=env)
    decision = decisions(own_copy.project)[-1]
    assert (decision["kind"], decision["operator"]) == ("promote", "bob")
    assert snapshot(deployed)["fmn.pt"] == own_copy.fmn_md5[1]
    pointer = yaml.safe_load((own_copy.artifacts / "deployed.dvc").read_text())["outs"][0]["md5"]
    assert pointer != yaml.safe_load(own_copy.pointer[2])["outs"][0]["md5"]  # the pointer moved with the files

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"ops": {"deployed_model": {"config": {
        "action": "promote", "candidate": "0" * 32, "reason": "typo"}}}}))
    refused = run([BIN / "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "deployed_model",
                   "--partition", "synthetic", "-c", unknown], REPO, env=env, check=False)
    assert refused.returncode != 0 and "no model with that fmn.pt md5 in the history" in refused.stdout + refused.stderr
    assert snapshot(deployed)["fmn.pt"] == own_copy.fmn_md5[1]


ROLLBACK_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
import dagster as dg
from fmn_assets.assets import ASSETS, CHECKS
from fmn_assets.resources import DVCResource, ProjectPaths
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000_000, resource.RLIM_INFINITY))  # fmn.pt cannot be copied whole
with dg.DagsterInstance.get() as instance:
    result = dg.materialize([*ASSETS, *CHECKS], selection=["deployed_model"], partition_key="synthetic",
                            instance=instance, resources={"paths": ProjectPaths(), "dvc": DVCResource()},
                            run_config={"ops": {"deployed_model": {"config": {"action": "rollback", "reason": "r"}}}},
                            raise_on_error=False)
print("SUCCESS" if result.success else "FAILED")
"""


def test_a_failed_or_killed_promotion_leaves_the_champion_in_place(own_copy, tmp_path):
    deployed, env = own_copy.artifacts / "deployed", _env(own_copy)
    before = snapshot(deployed), (own_copy.artifacts / "deployed.dvc").read_text(), decisions(own_copy.project)
    failed = run([sys.executable, "-c", ROLLBACK_UNDER_A_FILE_SIZE_LIMIT], REPO, env=env, check=False)
    assert "FAILED" in failed.stdout, failed.stdout[-2000:] + failed.stderr[-2000:]
    after = snapshot(deployed), (own_copy.artifacts / "deployed.dvc").read_text(), decisions(own_copy.project)
    assert after == before and not (own_copy.artifacts / ".deployed.staged").exists()

    config = tmp_path / "rollback.yaml"
    config.write_text(yaml.safe_dump({"ops": {"deployed_model": {"config": {"action": "rollback", "reason": "r"}}}}))
    process = subprocess.Popen([str(BIN / "dagster"), "asset", "materialize", "-m", "fmn_assets", "--select",
                                "deployed_model", "--partition", "synthetic", "-c", str(config)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staged = own_copy.artifacts / ".deployed.staged"
    deadline = time.time() + 300
    while not staged.exists():  # the new folder is being built beside the deployed one: kill the step now
        assert process.poll() is None and time.time() < deadline, "the promotion finished before it could be killed"
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    after = snapshot(deployed), (own_copy.artifacts / "deployed.dvc").read_text(), decisions(own_copy.project)
    assert after == before  # files, pointer and history: the old champion, whole

    # the next run discards the half-built folder and decides again; the deployed folder stays whole
    done = run([BIN / "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "deployed_model",
                "--partition", "synthetic"], REPO, env=env)
    assert "deployed_model_is_whole" in done.stdout + done.stderr and not staged.exists()
    assert decisions(own_copy.project)[-1]["kind"] == "unchanged"
    assert snapshot(deployed) == before[0]


def test_two_partitions_promote_independently(own_copy):
    splits = load_split_table(own_copy.artifacts / "splits.parquet")
    manifest = own_copy.project / "data" / "custom" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    splits[["path", "pid", "camid", "split"]].to_csv(manifest, index=False)
    synthetic_before = snapshot(own_copy.artifacts / "deployed"), decisions(own_copy.project)
    config = run_config()
    del config["ops"]["dataset_splits"]
    with dg.DagsterInstance.from_config(str(own_copy.home)) as instance:
        result = PIPELINE.execute_in_process(run_config=config, partition_key="custom", instance=instance,
                                             raise_on_error=False)
    assert result.success
    custom = decisions(own_copy.project, "custom")
    assert [(d["decision"], d["kind"], d["partition"]) for d in custom] == [("promoted", "first", "custom")]
    assert (own_copy.project / "artifacts" / "custom" / "deployed" / "fmn.pt").is_file()
    assert (snapshot(own_copy.artifacts / "deployed"), decisions(own_copy.project)) == synthetic_before


def test_dvc_pull_of_the_deployed_pointer_gives_the_champion_on_another_clone(own_copy, tmp_path):
    project = own_copy.project
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "trained and deployed"], project)
    clone = tmp_path / "elsewhere"
    run(["git", "clone", "-q", project, clone], tmp_path)
    run([BIN / "dvc", "remote", "add", "--local", "-d", "team", own_copy.remote], clone)
    pulled = run([sys.executable, "-m", "fmn_assets.pull", "artifacts/synthetic/deployed.dvc"], REPO,
                 env={**os.environ, "FMN_PROJECT_DIR": str(clone)})
    assert pulled.returncode == 0
    assert snapshot(clone / "artifacts" / "synthetic" / "deployed") == snapshot(own_copy.artifacts / "deployed")
    assert not (clone / "artifacts" / "synthetic" / "fmn.pt").exists()  # the champion alone, not the candidate
