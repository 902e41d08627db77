"""Process-group set-up for single-process and ``torchrun`` (DDP) runs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> the local rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but torch has no usable CUDA device")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL on CUDA and gloo on CPU. A plain ``python`` launch stays single-process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in a single process)."""
    if not info.distributed:
        return values
    v = values.clone()
    dist.all_reduce(v)
    return v / info.world_size
