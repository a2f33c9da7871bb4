"""One answer to "which device does this run on?" for training, extraction and search alike."""

from __future__ import annotations

import torch

from fmn_core.utils.errors import FMNInputError


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
