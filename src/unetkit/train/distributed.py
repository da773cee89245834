"""Reductions across the ranks of a DDP run (the process group: ``unetkit.distributed``)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..distributed import DistInfo, init_distributed, shutdown_distributed

__all__ = ["DistInfo", "all_max", "all_mean", "init_distributed", "shutdown_distributed"]


def all_max(value: float, info: DistInfo, device: torch.device) -> float:
    """The largest value of a float over all ranks (one all_reduce), so ranks agree."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """The mean of a float over all ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
