"""Helpers shared by the test layers: small real image files and datasets, and throw-away Dagster projects
(a git + DVC repository with a local DVC remote), servers and process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

#: dataset_splits' config for the synthetic partition: generate the tiny dataset into data/synthetic first.
TINY_DATA_CONFIG = {"ops": {"dataset_splits": {"config": {"synthetic_preset": "tiny"}}}}

#: The rest of the graph (fmn_pipeline) in seconds: the cpu recipe (Lite0 at its 128x64), two short stages.
TINY_RUN_CONFIG = {"ops": {
    "grn_checkpoint": {"config": {"overrides": {"batch_size": 16, "stage1_epochs": 2, "stage1_lr": 0.02}}},
    "fmn_checkpoint": {"config": {"overrides": {"stage2_epochs": 1, "stage2_lr": 0.02}}},
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


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (128, 64), fmt: str | None = None) -> Path:
    """Write a small random RGB image (height, width) to ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def market(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A minimal valid Market-1501 folder: 2 training identities, 2 test identities seen by 2 cameras."""
    files = {"bounding_box_train": [(1, 1), (1, 2), (2, 1), (2, 2)],
             "query": [(3, 1), (4, 1)], "bounding_box_test": [(3, 2), (4, 2), (3, 3)]}
    seed = 0
    for folder, items in files.items():
        for pid, cam in items:
            seed += 1
            write_image(root / folder / f"{pid:04d}_c{cam}s1_{seed:06d}_00.jpg", seed=seed)
    for name, content in (extra or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def mark_layer(items, folder: Path, marker: str, timeout_s: int | None = None, *also: str) -> None:
    """A layer folder's conftest hook: mark the tests written in ``folder`` (and give them its timeout)."""
    import pytest

    for item in items:
        if folder not in Path(item.path).parents:
            continue
        for name in (marker, *also):
            item.add_marker(getattr(pytest.mark, name))
        if timeout_s is not None and item.get_closest_marker("timeout") is None:  # a test's own timeout wins
            item.add_marker(pytest.mark.timeout(timeout_s))
