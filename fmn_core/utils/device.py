"""One answer to "which device does this run on?" for training, extraction and search alike."""

from __future__ import annotations

import re

import torch

from fmn_core.utils.errors import FMNInputError

#: the device names a configuration may hold (whether this machine has that device is checked when it is used)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def device_spelling_problem(name: str, value: str) -> str:
    """Why ``value`` is not a device name (for the field ``name``), or '' when it is one."""
    return "" if DEVICE_PATTERN.fullmatch(value) else f"{name}={value!r}: expected {DEVICE_CHOICES}"


def resolve_device(device: str | torch.device, local_rank: int | None = None) -> torch.device:
    """'auto' picks CUDA when present; an explicit device that this machine lacks is an error saying so.

    ``local_rank`` (a torchrun process's GPU) picks the GPU for a bare ``cuda`` and makes it the current device,
    so every rank of a multi-GPU training uses its own.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise FMNInputError(f"device {device!r}: expected auto, cpu, cuda or cuda:N ({exc})") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if chosen.index is None and local_rank is not None:
            chosen = torch.device("cuda", local_rank)
        if (chosen.index or 0) >= count:
            raise FMNInputError(f"device {str(device)!r}: this machine has {count} usable CUDA device(s); use --device "
                                "cpu or auto")
        if local_rank is not None:
            torch.cuda.set_device(chosen)
    return chosen
