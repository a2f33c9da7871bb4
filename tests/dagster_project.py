"""A throw-away project folder for the Dagster tests: a git + DVC repository with a local DVC remote."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

#: synthetic_dataset's config: the tiny dataset. It runs on its own (its partitions definition is its own).
TINY_DATA_CONFIG = {"ops": {"synthetic_dataset": {"config": {"preset": "tiny"}}}}

#: The rest of the graph (fmn_pipeline) in seconds: the cpu recipe (Lite0 at its 128x64), two short stages.
TINY_RUN_CONFIG = {"ops": {
    "grn_checkpoint": {"config": {"batch_size": 16, "epochs": 2, "lr": 0.02}},
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
    """A git repository with DVC initialised and a local-folder default remote; returns (project, remote).

    It has the repository's own .gitignore (data/ and artifacts but their .dvc pointers ignored) and a first
    commit, as a real checkout does.
    """
    project, remote = folder / "project", folder / "dvc-remote"
    project.mkdir(parents=True)
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.email", "tests@example.invalid"], project)
    run(["git", "config", "user.name", "tests"], project)
    run([BIN / "dvc", "init", "-q"], project)
    run([BIN / "dvc", "config", "core.analytics", "false"], project)
    run([BIN / "dvc", "remote", "add", "-d", "local", remote], project)
    (project / ".gitignore").write_text((REPO / ".gitignore").read_text())
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "project with DVC"], project)
    return project, remote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def default_signals() -> None:
    """A background process may inherit ignored SIGINT / SIGTERM; dagster dev must hear them to shut down."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_process_group(server: subprocess.Popen) -> None:
    """Stop the server and everything it started (webserver, daemon, code server) by process group id.

    SIGINT first (dagster dev then stops its children itself), SIGTERM and SIGKILL if anything is left.
    """
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if not group_alive(server.pid):
            break
        os.killpg(server.pid, sig)
        deadline = time.time() + grace
        while time.time() < deadline and group_alive(server.pid):
            server.poll()
            time.sleep(0.25)
    server.wait(timeout=10)
    assert not group_alive(server.pid), "processes of dagster dev are still running"
