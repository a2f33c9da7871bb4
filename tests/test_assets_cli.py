"""The main job through the real Dagster CLI (`dagster asset materialize`) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import yaml

from tests.dagster_project import REPO, TINY_DATA_CONFIG, TINY_RUN_CONFIG, make_project, run


def test_main_job_materialises_the_graph_with_the_cli(tmp_path, monkeypatch):
    project, remote = make_project(tmp_path)
    home = tmp_path / "dagster_home"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"ops": {**TINY_DATA_CONFIG["ops"], **TINY_RUN_CONFIG["ops"]}}))
    env = {**os.environ, "FMN_PROJECT_DIR": str(project), "DAGSTER_HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "fmn_assets.main", "--config", str(config)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # two runs: synthetic_dataset has a partitions definition of its own, then the rest of the graph
    assert "dagster asset materialize -m fmn_assets --select synthetic_dataset --partition synthetic" in output
    assert "dagster asset materialize -m fmn_assets --select not key:synthetic_dataset --partition synthetic" in output
    assert "RUN_SUCCESS" in output
    for row in ("| GRN |", "| LAN |", "| FMN |", "| FMN + re-ranking |"):
        assert row in result.stdout
    pictures = project / "artifacts" / "synthetic" / "pictures"
    for name in ("cmc.png", "ranked_lists.png", "heatmaps.png", "training.png"):
        assert str(pictures / name) in result.stdout and (pictures / name).is_file()
    assert (home / "dagster.yaml").is_file()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places the SQLite storage under $DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert all(r.tags["dagster/partition"] == "synthetic" for r in runs)
    assert any((remote / "files" / "md5").iterdir())
    # the printed git line records exactly the run's pointers
    line = next(x.strip() for x in result.stdout.splitlines() if x.strip().startswith("git add "))
    pointers = ["data.dvc", *(f"artifacts/synthetic/{name}.dvc" for name in
                              ("MODEL_CARD.md", "fmn.onnx", "fmn.pt", "gallery_descriptors.parquet", "grn.pt",
                               "query_descriptors.parquet"))]
    assert line.startswith(f"git add {' '.join(pointers)} && git commit -m ")
    run(["bash", "-c", line], project)
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    assert ".dvc" not in status, status  # no pointer of the run is left out of git


def test_main_job_reports_a_failing_run(tmp_path):
    project, _ = make_project(tmp_path)
    env = {**os.environ, "FMN_PROJECT_DIR": str(project), "DAGSTER_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "fmn_assets.main", "--partition", "market1501",
                             "--select", "dataset_splits"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0
    assert "the run failed" in result.stderr and "dagster dev" in result.stderr
    assert "expected the Market-1501 folders" in result.stdout + result.stderr
