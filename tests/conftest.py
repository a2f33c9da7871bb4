"""Fixtures of every layer: offline weights, the image writer, and no child process left behind.

Tests live by layer: ``tests/unit`` (in-process and fast), ``tests/integration`` (trains models, or drives the
real Dagster CLI / daemon, DVC remotes, sshd or torchrun) and ``tests/browser`` (headless chromium against
``dagster dev``); each folder's conftest.py marks its tests and sets their timeout, so a new test gets its
layer from where it is written.
"""

from __future__ import annotations

import os

import psutil
import pytest

# No test may download weights; set in os.environ (not a fixture) so subprocesses the tests start inherit it.
os.environ["FMN_OFFLINE"] = "1"
# Tests that compare two trainings bit for bit need one thread count in both; the default (auto) follows the
# machine's load, which the suite's own subprocesses change. tests/unit/test_threads.py tests the default.
os.environ.setdefault("FMN_THREADS", "off")


@pytest.fixture
def image_writer():
    from tests.helpers import write_image

    return write_image


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
