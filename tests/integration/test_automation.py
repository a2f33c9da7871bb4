"""Declarative automation evaluated by a real `dagster-daemon`: what changed is rebuilt, nothing else.

The project holds only the generated synthetic dataset. With the `fmn_automation`
sensor started, a real daemon observes `raw_datasets` (every minute here) and
evaluates the conditions. Turning the sensor on requests nothing by itself (eager
conditions skip what was already missing on the first evaluation); a new version of
the synthetic data (generated again with another seed and `dvc add`-ed, as a user
updates any raw dataset) then requests `dataset_splits` for the synthetic partition
and for no other dataset, and no training before its splits exist and pass their checks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time

import dagster as dg
import pytest
from dagster._core.definitions.observe import observe  # not re-exported at the top level

from fmn_assets.assets.data import raw_datasets
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data.synthetic import SYNTHETIC_PRESETS, generate_synthetic
from tests.helpers import BIN, REPO, default_signals, make_project, run, stop_process_group

pytestmark = [pytest.mark.timeout(600), pytest.mark.integration]


def test_daemon_ticks_rebuild_only_the_dataset_that_changed(tmp_path, monkeypatch):
    project, _ = make_project(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    # the in-process executor: what automation requests is the subject, not how the steps run
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(project), "DAGSTER_DISABLE_TELEMETRY": "1",
           "FMN_EXECUTOR": "in_process", "FMN_OBSERVE_CRON": "* * * * *", "FMN_AUTOMATION_SECONDS": "5"}

    def generate(seed: int) -> None:
        """A user's new version of the raw data: the generator with another seed, then `dvc add data`."""
        generate_synthetic(project / "data" / "synthetic", dataclasses.replace(SYNTHETIC_PRESETS["tiny"], seed=seed),
                           overwrite=True)
        run([BIN / "dvc", "add", "-q", "data"], project)

    generate(0)
    monkeypatch.setenv("FMN_PROJECT_DIR", str(project))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the data as it is observed once, nothing built
        assert observe([raw_datasets], instance=instance,
                       resources={"paths": ProjectPaths(), "dvc": DVCResource()}).success
    run([BIN / "dagster", "sensor", "start", "fmn_automation", "-m", "fmn_assets"], REPO, env=env)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = {r.run_id for r in instance.get_runs()}

        def new_runs() -> list[tuple[str | None, set[str]]]:
            return [(r.tags.get("dagster/partition"), {k.to_user_string() for k in r.asset_selection or []})
                    for r in instance.get_runs() if r.run_id not in before]

        def wait_for(predicate, what: str, seconds: float = 150) -> None:
            deadline = time.time() + seconds
            while not predicate():
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.time() < deadline, f"{what} did not happen: runs {new_runs()}"
                time.sleep(2)

        log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 -- closed below, after the daemon stops
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "fmn_assets"], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=default_signals)
        try:
            wait_for(lambda: (tmp_path / "daemon.log").read_text().count("Finished auto-materialization tick") >= 2,
                     "two automation ticks")
            assert not any("dataset_splits" in keys for _, keys in new_runs())  # turning it on requests nothing
            generate(1)  # the data changed
            wait_for(lambda: any("dataset_splits" in keys for _, keys in new_runs()), "a dataset_splits request")
            wait_for(lambda: any("raw_datasets" in keys for _, keys in new_runs()), "an observation on the cron tick")
        finally:
            stop_process_group(daemon)
            log.close()
        runs = new_runs()
        records = [instance.get_run_record_by_id(r.run_id) for r in instance.get_runs() if r.run_id not in before]
    assert [partition for partition, keys in runs if "dataset_splits" in keys] == ["synthetic"]
    splits_done = [r.end_time for r in records if "dataset_splits" in
                   {k.to_user_string() for k in r.dagster_run.asset_selection or []} and r.end_time]
    for record in records:  # training is requested only once the splits run has ended (and its checks passed)
        if "grn_checkpoint" in {k.to_user_string() for k in record.dagster_run.asset_selection or []}:
            assert splits_done and record.create_timestamp.timestamp() >= min(splits_done), record.dagster_run.run_id
