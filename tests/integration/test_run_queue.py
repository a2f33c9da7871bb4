"""Two runs of one partition launched at once through the real run queue and daemon run in turn.

`dagster.yaml` limits runs to one per `dagster/partition` tag value. Both runs are
submitted with `dagster job launch` (the instance's QueuedRunCoordinator), and a real
`dagster-daemon` dequeues and launches them; each run trains its own GRN (another seed)
and then its FMN on top of it. If the runs overlapped, one run's stage 2 would read the
other run's `grn.pt`: the test proves it did not from DVC's cache, which keeps every
version that was added.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid

import dagster as dg
import pytest
import yaml

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

pytestmark = pytest.mark.timeout(900)


def _config(folder, seed: int):
    ops = {name: value for name, value in TINY_RUN_CONFIG["ops"].items() if name in ("grn_checkpoint",
                                                                                     "fmn_checkpoint")}
    grn = ops["grn_checkpoint"]["config"]
    ops["grn_checkpoint"] = {"config": {**grn, "overrides": {**grn["overrides"], "seed": seed}}}
    path = folder / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump({"ops": ops}))
    return path


def _cached(project, md5: str):
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_second_run_of_a_busy_partition_waits_in_the_queue(tmp_path, monkeypatch):
    project, _ = make_project(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    # the in-process executor: the queue decides when a run starts, not how its steps run (one process instead of
    # one per step saves a torch import per step)
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(project), "DAGSTER_DISABLE_TELEMETRY": "1",
           "FMN_EXECUTOR": "in_process"}
    data_config = tmp_path / "data.yaml"
    data_config.write_text(yaml.safe_dump(TINY_DATA_CONFIG))
    run([BIN / "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "dataset_splits", "--partition",
         "synthetic", "-c", data_config], REPO, env=env)  # the tiny data generated, its split table written
    run_ids, seeds = [], {}
    for seed in (1, 2):
        run_id = str(uuid.uuid4())
        seeds[run_id] = seed
        # the graph up to the FMN (what the test inspects); extraction, evaluation and export add only time
        launched = subprocess.run([str(BIN / "dagster"), "job", "launch", "-m", "fmn_assets", "-j", "fmn_pipeline",
                                   "-o", "*fmn_checkpoint", "-c", str(_config(tmp_path, seed)),
                                   "--tags", '{"dagster/partition": "synthetic"}', "--run-id", run_id],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
        run_ids.append(run_id)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places the storage under $DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert [instance.get_run_by_id(r).status for r in run_ids] == [dg.DagsterRunStatus.QUEUED] * 2

        log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 -- closed below, after the daemon stops
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "fmn_assets"], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=default_signals)
        try:
            deadline = time.time() + 780
            overlap = False
            while True:
                runs = [instance.get_run_by_id(r) for r in run_ids]
                running = [r for r in runs if r.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)]
                overlap |= len(running) > 1
                if all(r.is_finished for r in runs):
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.time() < deadline, f"runs not finished: {[r.status for r in runs]}"
                time.sleep(1)
        finally:
            stop_process_group(daemon)
            log.close()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), (tmp_path / "daemon.log").read_text()[-3000:]
        assert not overlap, "both runs of the partition were running at the same time"
        records = {r.run_id: instance.get_run_record_by_id(r.run_id) for r in runs}
        first, second = sorted(records.values(), key=lambda record: record.start_time)
        assert second.start_time >= first.end_time, "the second run started before the first one ended"

        grn_sha1 = set()
        for run_id in run_ids:
            md5 = {}
            for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                materialization = event.dagster_event.event_specific_data.materialization
                md5[materialization.asset_key.to_user_string()] = materialization.metadata.get("dvc_md5")
            grn = _cached(project, md5["grn_checkpoint"].value).read_bytes()
            fmn = torch_load(_cached(project, md5["fmn_checkpoint"].value))
            # this run's stage 2 trained on this run's GRN, not on the other run's
            assert fmn["extra"]["grn_checkpoint_sha1"] == hashlib.sha1(grn).hexdigest()
            assert fmn["config"]["seed"] == seeds[run_id]
            grn_sha1.add(hashlib.sha1(grn).hexdigest())
        assert len(grn_sha1) == 2  # two seeds, two different GRNs
        assert set(md5) == {"dataset_splits", "grn_checkpoint", "fmn_checkpoint"}  # the selection, nothing else


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
