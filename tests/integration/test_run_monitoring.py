"""The run process killed under the daemon: run monitoring fails the run, the run retry resumes it.

A run is launched through the real queue (`dagster job launch`) and executed by a real
`dagster-daemon`. Once the GRN has written its first partial checkpoint, the run worker
and everything under it are SIGKILLed. Run monitoring (`dagster.yaml`, polling every 2 s
here instead of 60) must mark the run failed rather than leave it STARTED forever and give
back the `gpu` pool slot the killed step held (2 s after instead of 60); the run-retry policy
(retries only for runs whose process died) must then launch a new run that resumes from the
partial checkpoint and succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import dagster as dg
import psutil
import pytest
import yaml

from fmn_core.engine import load_checkpoint
from tests.helpers import BIN, REPO, TINY_DATA_CONFIG, default_signals, make_project, run, stop_process_group

pytestmark = pytest.mark.timeout(900)


def _run_worker(daemon: subprocess.Popen):
    """The run worker: the code server (under the daemon) runs each launched run in a child process of its own."""
    for server in psutil.Process(daemon.pid).children(recursive=True):
        if "api grpc" in " ".join(server.cmdline()):
            for child in server.children():
                if "spawn_main" in " ".join(child.cmdline()):  # not the orphan watchers
                    return child
    return None


def test_killed_run_is_marked_failed_and_its_retry_resumes(tmp_path, monkeypatch):
    project, _ = make_project(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    instance_yaml = yaml.safe_load((REPO / "dagster.yaml").read_text())
    instance_yaml["run_monitoring"].update(poll_interval_seconds=2, free_slots_after_run_end_seconds=2)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(project), "DAGSTER_DISABLE_TELEMETRY": "1"}
    data_config = tmp_path / "data.yaml"
    data_config.write_text(yaml.safe_dump(TINY_DATA_CONFIG))
    run([BIN / "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "dataset_splits", "--partition",
         "synthetic", "-c", data_config], REPO, env=env)  # the tiny data generated, its split table written
    config = tmp_path / "grn.yaml"
    config.write_text(yaml.safe_dump({"ops": {"grn_checkpoint": {"config": {"overrides": {
        "batch_size": 16, "stage1_epochs": 3, "stage1_lr": 0.02, "device": "cpu"}}}}}))
    run_id = str(uuid.uuid4())
    run([BIN / "dagster", "job", "launch", "-m", "fmn_assets", "-j", "fmn_pipeline", "-o", "*grn_checkpoint",
         "-c", config, "--tags", '{"dagster/partition": "synthetic"}', "--run-id", run_id], REPO, env=env)

    partial = project / "artifacts" / "synthetic" / "grn.partial.pt"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 -- closed below, after the daemon stops
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "fmn_assets"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_signals)
    try:
        deadline = time.time() + 600
        while not partial.exists():
            assert time.time() < deadline and daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(0.2)
        worker = _run_worker(daemon)
        assert worker is not None, "no process executes the run"
        for process in [*worker.children(recursive=True), worker]:  # the run worker and its step processes
            process.send_signal(signal.SIGKILL)

        with dg.DagsterInstance.from_config(str(home)) as instance:
            retry = None
            while time.time() < deadline:
                original = instance.get_run_by_id(run_id)
                retries = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
                retry = retries[0] if retries else None
                if original.status == dg.DagsterRunStatus.FAILURE and retry is not None and retry.is_finished:
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
            assert original.status == dg.DagsterRunStatus.FAILURE, original.status  # not left STARTED forever
            assert retry is not None and retry.status == dg.DagsterRunStatus.SUCCESS, (
                retry and retry.status, (tmp_path / "daemon.log").read_text()[-3000:])
            events = instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            materializations = [e.dagster_event.event_specific_data.materialization for e in events]
            grn = next(m for m in materializations if m.asset_key == dg.AssetKey("grn_checkpoint"))
    finally:
        stop_process_group(daemon)
        log.close()
    assert grn.metadata["resumed_from_epoch"].value >= 1  # the retry went on from the killed run's partial checkpoint
    state = load_checkpoint(project / "artifacts" / "synthetic" / "grn.pt")
    assert state["complete"] and state["epoch"] == 3 and not partial.exists()
