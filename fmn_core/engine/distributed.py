"""Multi-GPU (or multi-process CPU) training with DistributedDataParallel.

Launch any training entry point with ``torchrun --nproc_per_node N ...``:
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK, and :func:`init_distributed`
joins the process group (NCCL on GPUs, gloo on CPUs). Without torchrun
everything runs in one process and these helpers do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    context = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_nccl = requested_device != "cpu" and torch.cuda.is_available()
        if use_nccl:
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return context


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def gather_objects(value: object, context: DistContext) -> list[object]:
    """Every rank's ``value``, in rank order (one process: ``[value]``); a collective, so all ranks must call it."""
    if not context.enabled:
        return [value]
    gathered: list[object] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
