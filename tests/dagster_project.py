"""A throw-away project folder for the Dagster tests: a git + DVC repository with a local DVC remote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

#: The whole graph in seconds: the tiny synthetic dataset, a ResNet-18 at 64x32, two short stages.
TINY_RUN_CONFIG = {"ops": {
    "dataset_splits": {"config": {"synthetic_preset": "tiny"}},
    "grn_checkpoint": {"config": {"input_height": 64, "input_width": 32, "batch_size": 16, "epochs": 2, "lr": 0.02}},
    "fmn_checkpoint": {"config": {"epochs": 1, "lr": 0.02}},
    "descriptor_tables": {"config": {"batch_size": 64}},
    "evaluation_metrics": {"config": {"ranked_list_queries": 2, "heatmap_images": 4}},
}}


def run(args: list, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_project(folder: Path) -> tuple[Path, Path]:
    """A git repository with DVC initialised and a local-folder default remote; returns (project, remote)."""
    project, remote = folder / "project", folder / "dvc-remote"
    project.mkdir(parents=True)
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.email", "tests@example.invalid"], project)
    run(["git", "config", "user.name", "tests"], project)
    run([BIN / "dvc", "init", "-q"], project)
    run([BIN / "dvc", "config", "core.analytics", "false"], project)
    run([BIN / "dvc", "remote", "add", "-d", "local", remote], project)
    return project, remote
