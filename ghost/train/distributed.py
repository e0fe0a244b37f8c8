"""Everything distributed in one place: the process group that ``torchrun`` describes, and the collectives
the engine needs (sums of metrics, agreeing on a decision, wrapping the model in DDP).

Launched by ``torchrun --nproc_per_node=N`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``), a run
joins the process group (NCCL on CUDA, Gloo on the CPU); launched plainly it is one process and every
collective is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SINGLE_PROCESS", "Distributed", "distributed_session"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    def all_reduce_sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """The element-wise sums of ``values`` over all processes."""
        if not self.active:
            return list(values)
        packed = torch.stack([v.detach().to(torch.float64) for v in values])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return list(packed.unbind())

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process (e.g. a decision all processes must share)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several processes, else ``model`` itself."""
        if not self.active:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: its own GPU (``cuda:local_rank``) when training on CUDA."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device


SINGLE_PROCESS = Distributed()
"""A run of one process (every collective is a no-op)."""


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[Distributed]:
    """Join the process group ``torchrun`` set up (if any) for the duration of a run, then leave it.

    A process group that already exists (the caller initialised it) is used as is and left open.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield SINGLE_PROCESS
        return
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    finally:
        if created:
            dist.destroy_process_group()
