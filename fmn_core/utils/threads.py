"""How many CPU threads training uses: torch's choice, a fixed number, or the cores actually free.

torch starts one OpenMP thread per core and every parallel region waits for its slowest
thread, so on a machine where another program keeps a core busy, the thread that shares
that core holds all the others back (measured in ``bench/busy_machine.py``: on a 2-core
AMD EPYC, stage 1 fell from 133 to 46 images/s with one busy process; one thread ran 85).
``FMN_THREADS`` decides:

* unset or ``auto`` (the default): torch's own count, lowered to the cores found idle over a
  short sample taken before training starts (at least one). On an idle machine that is
  torch's choice, so an idle machine trains exactly as before; a lower ``OMP_NUM_THREADS``
  (torchrun sets 1 for several processes per host) is kept;
* ``off``: torch's own setting, whatever the load (``torch.set_num_threads`` or
  ``OMP_NUM_THREADS`` made by the caller win);
* a number from 1 to the usable cores: exactly that many threads (more is refused).

The thread count changes the floating-point reduction order (1 vs 2 threads: 247 of 543
state tensors differ after three stage-1 steps), so two runs are bit-identical only at the
same count. A run records its count (``TrainResult.threads``, the checkpoint asset's metadata);
pin it (``FMN_THREADS=2``) where reruns must match whatever the machine is doing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from fmn_core.utils.errors import FMNInputError

ENV = "FMN_THREADS"
#: seconds of /proc/stat sampling that decide how many cores are free
SAMPLE_SECONDS = 0.25
#: a core counts as free when at least this fraction of it was idle over the sample
FREE_FRACTION = 0.6


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _idle_jiffies(stat: Path, cpus: set[int]) -> tuple[int, int] | None:
    idle = total = 0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle += values[3] + values[4]
        total += sum(values)
    return idle, total


def free_cores(sample_seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> int:
    """Cores of this process's affinity mask that other programs left idle over ``sample_seconds``."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:
        return usable_cores()
    before = _idle_jiffies(stat, cpus)
    time.sleep(sample_seconds)
    after = _idle_jiffies(stat, cpus)
    if before is None or after is None or after[1] <= before[1]:
        return len(cpus)
    idle_fraction = (after[0] - before[0]) / (after[1] - before[1])  # of all the sampled cores together
    idle_cores = idle_fraction * len(cpus)
    return max(1, min(len(cpus), int(idle_cores + (1 - FREE_FRACTION))))


def thread_setting(value: str | None = None) -> str:
    """``FMN_THREADS`` checked: 'auto' (default), 'off' or a whole number from 1 to the usable cores.

    More threads than cores is never faster here: every parallel region waits for its slowest thread, and 999
    threads on 2 cores slowed an epoch from 2 s to over 2 minutes.
    """
    text = (os.environ.get(ENV, "auto") if value is None else value).strip().lower() or "auto"
    cores = usable_cores()
    if text in ("auto", "off") or (text.isdigit() and 1 <= int(text) <= cores):
        return text
    if text.isdigit() and int(text) > 0:
        raise FMNInputError(f"{ENV}={text}: this process may use {cores} CPU core(s); expected 1 to {cores}, auto "
                            "(the cores that are free) or off (torch's own setting)")
    raise FMNInputError(f"{ENV}={text!r}: expected auto (the cores that are free), off (torch's own setting) or a "
                        f"number of threads from 1 to {cores} (the CPU cores this process may use)")


def configure_cpu_threads(value: str | None = None) -> int:
    """Apply ``FMN_THREADS`` (or ``value``) to torch's intra-op threads; returns the number in use."""
    setting = thread_setting(value)
    if setting == "off":
        return torch.get_num_threads()
    threads = min(torch.get_num_threads(), free_cores()) if setting == "auto" else int(setting)
    torch.set_num_threads(threads)
    return threads
