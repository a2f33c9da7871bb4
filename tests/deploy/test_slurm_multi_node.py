"""Both training stages across two nodes under a real Slurm (tests/deploy/slurm.py): ``nodes: 2, launcher: srun``.

The run itself executes on host A (the default executor); each training step runs ``srun --nodes=2 ... torchrun
--nnodes=2`` there, Slurm starts one torchrun on each host, they meet at a c10d rendezvous on the allocation's first
node and train with gloo over the veth link. The step's metadata names the host of each rank and who wrote the
checkpoint; the same graph trained in one process is the reference.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
import yaml

from fmn_assets.resources import ProjectPaths
from tests.deploy import slurm
from tests.deploy.hosts import TwoHosts
from tests.deploy.hosts import missing_requirements as missing_namespaces
from tests.helpers import BIN, REPO, TINY_DATA_CONFIG, TINY_RUN_CONFIG, make_project

REQUIRED = os.environ.get("FMN_REQUIRE_DEPLOY") == "1"
WHY_NOT = missing_namespaces() or slurm.missing_requirements()
pytestmark = pytest.mark.skipif(WHY_NOT is not None and not REQUIRED,
                                reason=f"{WHY_NOT}; FMN_REQUIRE_DEPLOY=1 makes this fail")

ACROSS_NODES = {"nodes": 2, "processes": 1, "launcher": "srun"}


def tiny_config(folder: Path, distributed: dict) -> Path:
    config = {"ops": {**copy.deepcopy(TINY_DATA_CONFIG["ops"]), **copy.deepcopy(TINY_RUN_CONFIG["ops"])}}
    for step in ("grn_checkpoint", "fmn_checkpoint"):
        config["ops"][step]["config"].update(distributed)
    config["ops"]["grn_checkpoint"]["config"]["overrides"]["device"] = "cpu"
    path = folder / f"tiny-{len(distributed)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def materializations(home: Path) -> dict[str, dict]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {name: instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
                for name in ("grn_checkpoint", "fmn_checkpoint")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert WHY_NOT is None, f"FMN_REQUIRE_DEPLOY=1 but {WHY_NOT}"
    folder = tmp_path_factory.mktemp("slurm")
    hosts = TwoHosts(folder / "net")
    hosts.create()
    try:
        cluster = slurm.SlurmCluster(hosts, folder / "slurm")
        cluster.start()
        yield cluster
    finally:
        hosts.remove()


def test_both_stages_train_across_two_nodes_under_slurm(cluster, tmp_path, monkeypatch):
    project, _ = make_project(tmp_path / "shared")
    home = tmp_path / "shared" / "dagster_home"
    config = tiny_config(tmp_path, ACROSS_NODES)
    env = {**cluster.env, "FMN_PROJECT_DIR": str(project), "DAGSTER_HOME": str(home),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("FMN_EXECUTOR", None)
    result = cluster.hosts.run(cluster.hosts.a, [sys.executable, "-m", "fmn_assets.main", "--config", str(config)],
                               env=env, cwd=REPO, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:] + cluster.logs()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    across = materializations(home)
    for step, metadata in across.items():
        hosts = dict(part.split(": ") for part in metadata["rank_hosts"].value.split(", "))
        writers = metadata["checkpoint_written_by_ranks"].value
        print(f"\n{step}: ranks on {hosts}, checkpoint written by rank(s) {writers}")
        assert sorted(hosts.values()) == ["fmn-host-a", "fmn-host-b"], hosts  # one rank on each host
        assert metadata["checkpoint_written_by_ranks"].value == "0"
    paths = ProjectPaths(project_dir=str(project))
    for stage in (1, 2):
        weights = torch.load(paths.checkpoint("synthetic", stage), map_location="cpu", weights_only=False)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    metrics = json.loads(paths.metrics("synthetic").read_text())

    # the reference: the same run in one process, on this machine
    local, _ = make_project(tmp_path / "local")
    reference_env = {**os.environ, "FMN_PROJECT_DIR": str(local), "DAGSTER_HOME": str(tmp_path / "home")}
    reference_env.pop("FMN_EXECUTOR", None)
    reference = subprocess.run([sys.executable, "-m", "fmn_assets.main", "--config",
                                str(tiny_config(tmp_path, {}))], cwd=REPO, env=reference_env, capture_output=True,
                               text=True, timeout=900)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    expected = json.loads(ProjectPaths(project_dir=str(local)).metrics("synthetic").read_text())
    table = pd.read_parquet(paths.splits("synthetic"))
    chance = 100 / table[table["split"] == "gallery"]["pid"].nunique()  # rank-1 of a random ranking, in percent
    for name in ("GRN", "FMN"):
        print(f"{name}: two nodes rank-1 {metrics[name]['rank1']:.1f} mAP {metrics[name]['mAP']:.1f}; one process "
              f"rank-1 {expected[name]['rank1']:.1f} mAP {expected[name]['mAP']:.1f}; chance {chance:.1f}")
        assert metrics[name]["rank1"] > chance and metrics[name]["mAP"] > chance, (name, metrics[name])
    reference_paths = ProjectPaths(project_dir=str(local))
    for stage in (1, 2):
        ours = torch.load(paths.checkpoint("synthetic", stage), map_location="cpu", weights_only=False)["model"]
        theirs = torch.load(reference_paths.checkpoint("synthetic", stage), map_location="cpu",
                            weights_only=False)["model"]
        keys = [k for k in ours if ours[k].is_floating_point()]
        apart = torch.cat([(ours[k].double() - theirs[k].double()).flatten() for k in keys]).norm()
        size = torch.cat([theirs[k].double().flatten() for k in keys]).norm()
        print(f"stage {stage}: weights two nodes vs one process differ by {float(apart / size):.3%} (relative L2)")
