"""The whole graph on Dagster's Celery executor across two hosts (deploy/celery/).

Host A (a network namespace) runs Redis, the run itself (``python -m fmn_assets.main`` with FMN_EXECUTOR=celery)
and a worker of the ``default`` queue; host B runs the worker of the ``gpu`` queue. The hosts share the project
folder (artifacts, DVC remote) and the Dagster instance's storage, as pods share a volume; they reach each other only
over their veth link. Which host ran each step is read from the run's events (the engine event each worker writes
when it starts a step names the worker, ``NAME@HOST``).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
import torch
import yaml

from fmn_assets.resources import ProjectPaths
from tests.deploy.hosts import Host, TwoHosts, missing_requirements
from tests.helpers import BIN, REPO, TINY_DATA_CONFIG, TINY_RUN_CONFIG, make_project

REQUIRED = os.environ.get("FMN_REQUIRE_DEPLOY") == "1"
WHY_NOT = missing_requirements() or (None if shutil.which("redis-server") else
                                     "no redis-server on PATH (apt-get install redis-server)")
pytestmark = pytest.mark.skipif(WHY_NOT is not None and not REQUIRED,
                                reason=f"{WHY_NOT}; FMN_REQUIRE_DEPLOY=1 makes this fail")

GPU_STEPS = {"grn_checkpoint", "fmn_checkpoint", "descriptor_tables"}  # the gpu pool (descriptor_tables: two assets)
WORKER_FILE = REPO / "deploy" / "celery" / "celery.yaml"


class Cluster:
    """Redis on host A, a ``default`` worker on A and a ``gpu`` worker on B, sharing ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hosts = TwoHosts(folder / "net")
        self.project, _ = make_project(folder / "shared")
        self.home = folder / "shared" / "dagster_home"
        self.home.mkdir()
        shutil.copyfile(REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.workers: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        broker = f"redis://{self.hosts.a.address}:6379"
        return {**os.environ, "FMN_PROJECT_DIR": str(self.project), "DAGSTER_HOME": str(self.home),
                "FMN_EXECUTOR": "celery", "FMN_CELERY_BROKER": f"{broker}/0", "FMN_CELERY_BACKEND": f"{broker}/1",
                "FMN_RETRY_DELAY_S": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def start(self) -> None:
        self.hosts.create()
        a = self.hosts.a
        self.hosts.start(a, ["redis-server", "--bind", a.address, "--port", "6379", "--save", "",
                             "--appendonly", "no", "--protected-mode", "no"], self.logs / "redis.log")
        deadline = time.monotonic() + 30
        while self.hosts.run(a, ["redis-cli", "-h", a.address, "ping"], timeout=10).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, (self.logs / "redis.log").read_text()
            time.sleep(0.3)
        self.start_worker("default", a, "default")
        self.start_worker("gpu", self.hosts.b, "gpu")

    def start_worker(self, name: str, host: Host, queue: str) -> None:
        """``dagster-celery worker start`` on ``host`` serving ``queue``, one step at a time; waits until ready."""
        log = self.logs / f"worker-{name}.log"
        self.workers[name] = self.hosts.start(
            host, [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(WORKER_FILE),
                   "-q", queue, "-n", name, "--", "--concurrency=1"], log, env=self.env, cwd=self.project)
        deadline = time.monotonic() + 120
        while " ready." not in (log.read_text() if log.exists() else ""):
            assert self.workers[name].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)

    def stop_worker(self, name: str) -> None:
        TwoHosts.stop(self.workers.pop(name))

    def on_a(self, argv: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        return self.hosts.run(self.hosts.a, argv, env=self.env, cwd=REPO, timeout=timeout)

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert WHY_NOT is None, f"FMN_REQUIRE_DEPLOY=1 but {WHY_NOT}"
    cluster = Cluster(tmp_path_factory.mktemp("celery"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(cluster.home))  # dagster.yaml keeps the storage under $DAGSTER_HOME
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.hosts.remove()


def tiny_config(folder: Path, **stage1) -> Path:
    config = {"ops": {**copy.deepcopy(TINY_DATA_CONFIG["ops"]), **copy.deepcopy(TINY_RUN_CONFIG["ops"])}}
    config["ops"]["grn_checkpoint"]["config"]["overrides"].update(stage1)
    path = folder / f"tiny-{len(stage1)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def step_hosts(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Step key -> the ``NAME@HOST`` of each Celery worker that started it, from the run's engine events."""
    hosts: dict[str, list[str]] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event and "in celery worker" in (event.message or ""):
            worker = event.engine_event_data.metadata["Celery worker"].value
            hosts.setdefault(event.step_key, []).append(worker)
    return hosts


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_the_graph_runs_across_two_hosts_like_the_default_executor(cluster, tmp_path):
    config = tiny_config(cluster.folder)
    result = cluster.on_a([sys.executable, "-m", "fmn_assets.main", "--config", str(config)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + cluster.logs_text()

    with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        hosts = step_hosts(instance, run.run_id)
        checks = [record.dagster_event.event_specific_data
                  for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    print("\nstep -> Celery worker:", {step: workers for step, workers in sorted(hosts.items())})
    assert set(hosts) >= GPU_STEPS | {"dataset_splits", "evaluation_metrics"}
    for step, workers in hosts.items():
        expected = "gpu@fmn-host-b" if step in GPU_STEPS else "default@fmn-host-a"
        assert workers == [expected], (step, workers)
    assert checks and all(check.passed for check in checks), [(c.check_name, c.passed) for c in checks]

    # the same run with the default (multiprocess) executor, on this machine, in a project of its own
    local, _ = make_project(tmp_path / "local")
    env = {**os.environ, "FMN_PROJECT_DIR": str(local), "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("FMN_EXECUTOR", None)
    reference = subprocess.run([sys.executable, "-m", "fmn_assets.main", "--config", str(config)], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    remote, here = ProjectPaths(project_dir=str(cluster.project)), ProjectPaths(project_dir=str(local))
    pd.testing.assert_frame_equal(pd.read_parquet(remote.splits("synthetic")),
                                  pd.read_parquet(here.splits("synthetic")))
    # CPU training with the same seed and threads is deterministic: both stages' weights are bit-identical
    for stage in (1, 2):
        theirs = state_dict(remote.checkpoint("synthetic", stage))
        ours = state_dict(here.checkpoint("synthetic", stage))
        assert theirs.keys() == ours.keys()
        assert all(torch.equal(theirs[k], ours[k]) for k in ours), f"stage {stage} weights differ"
    for split in ("query", "gallery"):
        pd.testing.assert_frame_equal(pd.read_parquet(remote.descriptors("synthetic", split)),
                                      pd.read_parquet(here.descriptors("synthetic", split)))
    assert remote.metrics("synthetic").read_text() == here.metrics("synthetic").read_text()


def test_a_worker_killed_in_training_fails_the_step_clearly_and_the_retry_resumes_on_the_survivor(cluster):
    paths = ProjectPaths(project_dir=str(cluster.project))
    out = paths.artifacts("synthetic")
    for stage in (1, 2):  # a fresh training, so that there is a partial checkpoint to resume from
        paths.checkpoint("synthetic", stage).unlink(missing_ok=True)
    cluster.start_worker("gpu-a", cluster.hosts.a, "gpu")  # the survivor: a second GPU worker, on host A
    try:
        config = tiny_config(cluster.folder, stage1_epochs=40, batch_size=8)
        env = cluster.env
        command = cluster.hosts.command(cluster.hosts.a, [sys.executable, "-m", "fmn_assets.main", "--config",
                                                           str(config), "--select", "+grn_checkpoint"])
        main = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        partial = out / "grn.partial.pt"
        deadline = time.monotonic() + 600
        while not partial.is_file():
            assert main.poll() is None and time.monotonic() < deadline, (main.stdout.read(), cluster.logs_text())
            time.sleep(0.5)
        with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
            run = instance.get_runs(limit=1)[0]
            (killed,) = step_hosts(instance, run.run_id)["grn_checkpoint"]
        name = killed.split("@")[0]
        worker = cluster.workers[name]
        pool = [child for child in psutil.Process(worker.pid).children(recursive=True)
                if "celery" in " ".join(child.cmdline())]
        children = [p for p in pool if p.parent() and p.parent().pid in {q.pid for q in pool}]
        assert children, [p.cmdline() for p in pool]
        for child in children:  # the pool process running the step dies as on an out-of-memory kill
            child.kill()
        output, _ = main.communicate(timeout=300)
        assert main.returncode != 0, output[-3000:]
        with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
            failure = next(str(r.dagster_event) for r in
                           instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE))
            # the dead step never ended, so it still holds the gpu pool's slot: the daemon's run monitoring gives
            # it back free_slots_after_run_end_seconds after the run ended (dagster.yaml); no daemon runs here
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        assert "WorkerLostError" in failure and "[grn_checkpoint]" in failure, failure[-3000:]
        assert not paths.checkpoint("synthetic", 1).exists()  # nothing half-written passes for the checkpoint
        assert partial.is_file() and not list(out.glob("*.tmp*"))

        cluster.stop_worker(name)  # the lost worker's host does not come back; the other GPU worker is left
        survivor = "gpu-a@fmn-host-a" if name == "gpu" else "gpu@fmn-host-b"
        again = cluster.on_a([sys.executable, "-m", "tests.deploy.reexecute", run.run_id])
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:] + cluster.logs_text()
        retry_id = again.stdout.split()[-1]
        with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
            assert step_hosts(instance, retry_id)["grn_checkpoint"] == [survivor]
            materialization = instance.get_latest_materialization_event(dg.AssetKey("grn_checkpoint"))
            metadata = materialization.asset_materialization.metadata
        assert metadata["resumed_from_epoch"].value >= 1
        assert paths.checkpoint("synthetic", 1).is_file() and not partial.exists()
    finally:
        if "gpu-a" in cluster.workers:
            cluster.stop_worker("gpu-a")
