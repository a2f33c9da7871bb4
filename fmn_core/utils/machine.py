"""A one-line description of the machine, for checkpoints and model cards.

Training is not bit-identical across CPU models or thread counts, so a result
is only meaningful together with the machine that produced it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """E.g. ``AMD EPYC, 2 cores, 2 torch threads`` or ``..., NVIDIA H100 80GB HBM3``."""
    parts = [cpu_model(), f"{os.cpu_count() or '?'} cores", f"{torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)
