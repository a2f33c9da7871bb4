"""The main job refuses bad start-up variables and run configs before anything runs (real subprocesses, real
Dagster instances): one line each, no traceback, no run recorded. docs/operations.md lists each case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def main_job(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m fmn_assets.main` (what `python3 run.py main` runs) in a fresh project folder and instance."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FMN_")}
    return subprocess.run([sys.executable, "-m", "fmn_assets.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**clean, "FMN_PROJECT_DIR": str(project),
                                                      "DAGSTER_HOME": str(tmp_path / "home"), **env})


def runs_in(home: Path) -> int:
    if not (home / "dagster.yaml").exists() and not home.exists():
        return 0
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            return len(instance.get_runs())
    finally:
        del os.environ["DAGSTER_HOME"]


def test_bad_start_up_variables_are_one_line_each_without_a_traceback(tmp_path):
    done = main_job(tmp_path, FMN_RETRAIN_CRON="every sunday", FMN_EXECUTOR="kubernetes", FMN_THREADS="999",
                    FMN_AUTOMATION_SECONDS="soon", FMN_RETRY_DELAY_S="-1", FMN_OBSERVE_CRON="hourly",
                    FMN_OFFLINE="maybe")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert all(line.startswith("[fmn] refused: FMN_") for line in lines), lines
    expected = ["FMN_EXECUTOR='kubernetes': expected one of multiprocess, in_process, k8s, celery",
                "FMN_RETRAIN_CRON='every sunday': expected a cron string such as '0 3 * * 0'",
                "FMN_OBSERVE_CRON='hourly': expected a cron string",
                "FMN_AUTOMATION_SECONDS='soon': expected a whole number of seconds from 1 to 86400",
                "FMN_RETRY_DELAY_S='-1': expected seconds from 0 to 3600",
                "FMN_THREADS=999: this process may use", "FMN_OFFLINE='maybe'"]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert not (tmp_path / "home").exists()  # refused before the instance was even created
    (tmp_path / "a-file").write_text("not a folder")
    file = main_job(tmp_path, FMN_PROJECT_DIR=str(tmp_path / "a-file"))
    assert file.returncode == 2 and f"FMN_PROJECT_DIR='{tmp_path / 'a-file'}': expected the project's folder, not a " \
        "file" in file.stderr


def test_a_code_location_with_a_bad_executor_fails_naming_the_variable():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FMN_")}
    done = subprocess.run([sys.executable, "-c", "import fmn_assets; fmn_assets.defs"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**clean, "FMN_EXECUTOR": "kubernetes"})
    assert done.returncode != 0 and "EnvironmentSettingError: FMN_EXECUTOR='kubernetes': expected one of" in done.stderr


def test_an_unreachable_celery_broker_is_one_clear_line_before_the_run(tmp_path):
    port = free_port()  # nothing listens there
    done = main_job(tmp_path, FMN_EXECUTOR="celery", FMN_CELERY_BROKER=f"redis://127.0.0.1:{port}/0",
                    FMN_CELERY_BACKEND=f"redis://127.0.0.1:{port}/1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"FMN_EXECUTOR=celery: the Celery broker FMN_CELERY_BROKER=redis://127.0.0.1:{port}/0 does not answer" \
        in done.stderr and "unset FMN_EXECUTOR to run on this machine" in done.stderr
    assert runs_in(tmp_path / "home") == 0
    unset = main_job(tmp_path, FMN_EXECUTOR="celery")
    assert unset.returncode == 2 and "FMN_EXECUTOR=celery needs FMN_CELERY_BROKER" in unset.stderr


# -- run configs: refused before the first step, never retried ---------------------------------------------------


@pytest.mark.parametrize("config, expect", [
    ("ops: {grn_checkpoint: {config: {nodes: 0}}}",
     "ops.grn_checkpoint.config: GRNTrainingConfig: nodes=0: Input should be greater than or equal to 1"),
    ("ops: {fmn_checkpoint: {config: {processes: 0}}}", "FMNTrainingConfig: processes=0"),
    ("ops: {grn_checkpoint: {config: {overrides: {stage1_epochs: 99999999999999999999999}}}}",
     "stage1_epochs=1e+23: must lie in 0..1000"),
    ("ops: {grn_checkpoint: {config: {overrides: {stage1_epochs: 0}}}}",
     "stage1_epochs=0: grn_checkpoint trains at least 1 epoch"),
    ("ops: {grn_checkpoint: {config: {recipe: no_such_recipe}}}", "unknown recipe 'no_such_recipe'"),
    ("ops: {grn_checkpoint: {config: {nodes: 2}}}", "nodes: 2 needs a launcher that starts torchrun on every node"),
    ("ops: {grn_checkpoint: {config: {nodes: 2, launcher: command, rendezvous: 'h:1', launch_command: [nosuchprog]}}}",
     "launch_command: 'nosuchprog' is not a program on this host's PATH; no training was started"),
    ("ops: {fmn_checkpoint: {config: {overrides: {stage2_epochs: 5000}}}}", "stage2_epochs=5000: must lie in 0..1000"),
    ("ops: {evaluation_metrics: {config: {k1: 0}}}", "EvaluationConfig: k1=0: Input should be greater than or equal"),
    ("ops: {grn_checkpoint: {config: {no_such_key: 1}}}", "no_such_key"),
    ("ops: {dataset_splits: {config: {root: /no/such/market}}}", "root='/no/such/market': no such file or folder"),
    ("ops: {evaluation_metrics: {config: {k1: 4, k2: 6}}}",
     "ops.evaluation_metrics.config: k2=6: must be at most k1=4"),
    ("ops: {onnx_model: {config: {outputs: [fmn, global]}}}", "outputs=['fmn', 'global']: expected a non-empty list"),
    ("ops: {descriptor_tables: {config: {device: gpu}}}",
     "ops.descriptor_tables.config: device='gpu': expected auto, cpu, cuda, cuda:N or mps"),
])
def test_a_run_config_error_fails_before_the_first_step(tmp_path, config, expect):
    path = tmp_path / "run.yaml"
    path.write_text(config + "\n")
    done = main_job(tmp_path, "--config", str(path))
    assert done.returncode == 2 and expect in done.stderr, done.stderr
    assert "refused before the run started (nothing was run or changed)" in done.stderr
    assert "Traceback" not in done.stderr and runs_in(tmp_path / "home") == 0


@pytest.mark.parametrize("content, expect", [
    (None, "is a folder; give a run config file"),
    (b"", "is empty; leave --config out for the defaults"),
    (b"ops: caf\xe9\n", "is not UTF-8 text (byte 8)"),
])
def test_a_run_config_file_that_is_not_one_is_named(tmp_path, content, expect):
    path = tmp_path / "run.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    done = main_job(tmp_path, "--config", str(path))
    assert done.returncode != 0 and f"--config {path} {expect}" in done.stderr, done.stderr


