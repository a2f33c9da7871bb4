"""The DVC and Dagster command-line tools both work in one environment.

DVC's hydra/omegaconf chain used to pin antlr4-python3-runtime 4.9, under
which Dagster's asset-selection parser fails (``--select '*'`` raises
``TypeError: ord() expected string of length 1``). The project requires
hydra-core 1.4 / omegaconf 2.4, which accept antlr4 4.13; these tests run both
real CLIs so a regression in that resolution shows up at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_antlr_runtime_is_the_one_dagster_needs():
    major, minor = (int(part) for part in version("antlr4-python3-runtime").split(".")[:2])
    assert (major, minor) >= (4, 13)


def test_dvc_cli_round_trip_through_local_remote(tmp_path):
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run([str(BIN / "dvc"), "init", "-q"], repo)
    (repo / "data").mkdir()
    (repo / "data" / "a.txt").write_text("hello\n")
    run([str(BIN / "dvc"), "add", "-q", "data"], repo)
    run([str(BIN / "dvc"), "remote", "add", "-d", "local", str(remote)], repo)
    run([str(BIN / "dvc"), "push", "-q"], repo)
    import shutil

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    run([str(BIN / "dvc"), "pull", "-q"], repo)
    assert (repo / "data" / "a.txt").read_text() == "hello\n"


def test_dagster_cli_text_selection(tmp_path):
    (tmp_path / "defs.py").write_text(
        "import dagster as dg\n\n"
        "@dg.asset\ndef upstream() -> int:\n    return 1\n\n"
        "@dg.asset\ndef downstream(upstream: int) -> int:\n    return upstream + 1\n\n"
        "defs = dg.Definitions(assets=[upstream, downstream])\n")
    home = tmp_path / "home"
    home.mkdir()
    result = run([str(BIN / "dagster"), "asset", "materialize", "--select", "*", "-f", "defs.py"], tmp_path,
                 env={"DAGSTER_HOME": str(home)})
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    result = run([str(BIN / "dagster"), "asset", "materialize", "--select", "upstream*",
                  "-f", "defs.py"], tmp_path, env={"DAGSTER_HOME": str(home)})
    assert "RUN_SUCCESS" in result.stdout + result.stderr
