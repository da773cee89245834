"""torchrun environment -> process group, shared by training (DDP) and sharded prediction.

``torchrun`` describes the run in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
the rendezvous address); ``init_distributed`` joins that process group (NCCL for CUDA ranks,
gloo otherwise) and returns where this process stands. Without torchrun it does nothing and
returns a single-process ``DistInfo``. ``all_max`` and ``all_mean`` agree a float across the
ranks (the identity in a single process).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UnetkitError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str, timeout_minutes: float = 30) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL for CUDA devices and gloo otherwise; each CUDA rank takes its LOCAL_RANK GPU.
    A collective that waits longer than ``timeout_minutes`` for another rank fails.
    Returns a single-process ``DistInfo`` when not launched by torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # resolve "auto" first: on GPUs it means CUDA, and CUDA ranks talk over NCCL
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
        if backend == "nccl":
            gpus = torch.cuda.device_count()
            if local >= gpus:
                raise UnetkitError(
                    f"torchrun started LOCAL_RANK {local} but this machine has {gpus} GPU"
                    f"{'s' if gpus != 1 else ''}: use --nproc_per_node {gpus} "
                    "(or --device cpu for CPU ranks)"
                )
            torch.cuda.set_device(local)
        timeout = datetime.timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend, timeout=timeout)
    if rank != 0:  # rank 0 alone logs
        logging.getLogger("unetkit").setLevel(logging.WARNING)
    return DistInfo(rank, world, local)


def shutdown_distributed(info: DistInfo, together: bool = False) -> None:
    """Leave the process group.

    ``together`` (a run that ended normally on every rank): wait for every rank first. A rank
    that tore gloo down while rank 0 was still writing its last files aborted about one
    training run in two on a 2-core CPU ("terminate called without an active exception",
    exit -6). Not after an error: a barrier could wait for a rank stuck in another collective.
    """
    if info.enabled and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


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
