"""Shared fixtures: small real image files written to pytest's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

# No test may download weights; set in os.environ (not a fixture) so subprocesses the tests start inherit it.
os.environ["FMN_OFFLINE"] = "1"


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (128, 64), fmt: str | None = None) -> Path:
    """Write a small random RGB image (height, width) to ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def image_writer():
    return write_image


#: Test modules by layer: everything else is a fast unit test.
INTEGRATION_MODULES = {
    "test_assets_cli", "test_assets_pipeline", "test_automation", "test_cli", "test_descriptors_and_pictures",
    "test_distributed", "test_dvc_remote_ssh", "test_dvc_versioning", "test_k8s_deployment", "test_run_queue",
    "test_training", "test_pretrained_weights", "test_export_and_search", "test_faults", "test_run_monitoring",
}
BROWSER_MODULES = {"test_assets_ui"}
INTEGRATION_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its layer, and give the integration layer a longer timeout than the default."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if module in INTEGRATION_MODULES or module in BROWSER_MODULES:
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S))
        else:
            item.add_marker(pytest.mark.unit)


#: Children that Python itself keeps for the life of the test process: multiprocessing's resource tracker
#: (started by the first "spawn" pool or semaphore) and a forkserver, if one was started. Not leaks.
_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
LEFTOVER_GRACE_S = 10.0


def _leftover_children() -> list[psutil.Process]:
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE or any(h in command for h in _INTERPRETER_HELPERS):
                continue
        except psutil.NoSuchProcess:
            continue
        leftovers.append(child)
    return leftovers


@pytest.fixture(autouse=True, scope="module")
def no_process_left_behind(request):
    """After each test module, no child of the test run may remain: a leaked worker, server or daemon shows
    here, named by its command line, instead of as a hang or a full machine later. Leftovers are killed so
    the next module starts clean."""
    yield
    _, alive = psutil.wait_procs(_leftover_children(), timeout=LEFTOVER_GRACE_S)
    if not alive:
        return
    described = []
    for child in alive:
        try:
            described.append(f"pid {child.pid}: {' '.join(child.cmdline()) or child.name()}")
            child.kill()
        except psutil.NoSuchProcess:
            continue
    if described:
        pytest.fail(f"{request.module.__name__} left {len(described)} process(es) running "
                    f"(killed now):\n  " + "\n  ".join(described), pytrace=False)
