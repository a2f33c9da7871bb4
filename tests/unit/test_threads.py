"""FMN_THREADS: parsing, the free-core count from /proc/stat, and what the trainer applies."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from fmn_core.utils import threads
from fmn_core.utils.errors import FMNInputError


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _stat(path: Path, idle_by_cpu: dict[int, int], busy_by_cpu: dict[int, int]) -> None:
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{cpu} {busy_by_cpu[cpu]} 0 0 {idle} 0 0 0 0 0 0" for cpu, idle in idle_by_cpu.items()]
    path.write_text("\n".join(lines) + "\nintr 1 2 3\n")


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), (" Auto ", "auto"), ("OFF", "off"),
                                             ("1", "1")])
def test_the_setting_is_read_and_normalised(monkeypatch, value, expected):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.thread_setting(value) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_wrong_setting_names_the_variable_and_what_is_expected(bad):
    with pytest.raises(FMNInputError, match=r"FMN_THREADS=.*expected auto .* off .* number"):
        threads.thread_setting(bad)


def test_more_threads_than_usable_cores_is_refused_naming_the_range(monkeypatch):
    """FMN_THREADS=999 on a 2-core machine once ran 999 threads (load 742, an epoch of 2 s not done in 120 s)."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.thread_setting("2") == "2"
    for bad in ("3", "999"):
        with pytest.raises(FMNInputError, match=rf"FMN_THREADS={bad}: this process may use 2 CPU core\(s\); "
                                                r"expected 1 to 2"):
            threads.thread_setting(bad)


def test_a_number_sets_torch_threads_and_off_leaves_them(monkeypatch):
    torch.set_num_threads(1)
    assert threads.configure_cpu_threads("off") == 1
    monkeypatch.setenv(threads.ENV, "2")
    assert threads.configure_cpu_threads() == 2 and torch.get_num_threads() == 2


def test_free_cores_counts_the_cores_other_programs_left_idle(tmp_path, monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs a process allowed on two CPUs")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cpus[:2]))
    stat = tmp_path / "stat"
    a, b = cpus[:2]
    _stat(stat, {a: 100, b: 100}, {a: 100, b: 100})

    def advance(idle: dict[int, int], busy: dict[int, int]) -> None:
        threading.Timer(0.05, _stat, (stat, idle, busy)).start()

    advance({a: 200, b: 100}, {a: 100, b: 200})  # one core idle, the other busy the whole sample
    assert threads.free_cores(0.3, stat) == 1
    _stat(stat, {a: 100, b: 100}, {a: 100, b: 100})
    advance({a: 200, b: 200}, {a: 100, b: 100})  # both idle
    assert threads.free_cores(0.3, stat) == 2
    _stat(stat, {a: 100, b: 100}, {a: 100, b: 100})
    advance({a: 100, b: 100}, {a: 200, b: 200})  # both busy: still one thread
    assert threads.free_cores(0.3, stat) == 1


def test_an_unreadable_stat_file_means_every_allowed_core(tmp_path):
    assert threads.free_cores(0.01, tmp_path / "missing") == threads.usable_cores()


def test_training_on_the_cpu_applies_the_setting(monkeypatch):
    from fmn_core.engine import preset
    from fmn_core.engine.trainer import _runtime

    torch.set_num_threads(2)
    monkeypatch.setenv(threads.ENV, "1")
    _runtime(preset("cpu", device="cpu"))
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "none")
    with pytest.raises(FMNInputError, match="FMN_THREADS='none'"):
        _runtime(preset("cpu", device="cpu"))


def test_auto_is_the_default_and_lowers_torch_threads_to_the_free_cores(monkeypatch):
    from fmn_core.engine import preset
    from fmn_core.engine.trainer import _runtime

    monkeypatch.delenv(threads.ENV, raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)  # another program holds one of the two cores
    assert _runtime(preset("cpu", device="cpu")).threads == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "free_cores", lambda: 2)  # idle: torch's own count, as before
    assert _runtime(preset("cpu", device="cpu")).threads == 2


def test_auto_never_raises_a_count_the_caller_lowered(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 for several processes on one host; auto must not undo it."""
    torch.set_num_threads(1)
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    assert threads.configure_cpu_threads("auto") == 1 and torch.get_num_threads() == 1
