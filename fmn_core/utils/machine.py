"""A one-line description of the machine, for checkpoints, model cards and the bench figures.

Training is not bit-identical across CPU models or thread counts, so a result
is only meaningful together with the machine that produced it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name with its family/model numbers (the marketing name alone hides the generation).

    E.g. ``AMD EPYC Processor (family 25 model 17)`` from /proc/cpuinfo (Linux; the first CPU's fields), else
    what ``platform`` knows.
    """
    fields: dict[str, str] = {}
    try:
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown CPU"
    return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def machine_description(with_threads: bool = True) -> str:
    """E.g. ``AMD EPYC, 2 cores, 2 torch threads`` or ``..., NVIDIA H100 80GB HBM3``. Without this process's
    thread count where another process's (a training stage's) is what matters and is recorded on its own."""
    parts = [cpu_model(), f"{os.cpu_count() or '?'} cores",
             *([f"{torch.get_num_threads()} torch threads"] if with_threads else [])]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)
