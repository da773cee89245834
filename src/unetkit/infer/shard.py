"""Prediction sharded across the processes of ``torchrun`` (gloo on CPUs, NCCL on GPUs).

``torchrun --nproc_per_node N -m unetkit predict MODEL INPUTS -o OUT`` starts N processes
(ranks) of the same command; they split the work and write exactly the files one process
writes, byte for byte:

* images read whole are shared by pixels (``balanced_owners``): the largest image first, each
  goes to the rank with the fewest pixels so far (sizes from the file headers), so a folder of
  mixed sizes keeps every rank busy to about the same end;
* each image read by region (``unetkit.infer.large``): every rank predicts one contiguous run
  of its strips of TIFF tile rows (``strip_share``), rank 0 assembles the mask TIFF and the
  preview once every rank has written its strips;
* rank 0 alone writes ``summary.csv`` and ``coco.json``, from every rank's rows (gathered).

The ranks meet (a collective) once per image read by region, to share its start and its end,
and once at the end; a rank waits there for the slowest one. An input that fails on one rank
is reported by every rank and every rank exits with code 2; a rank that crashes makes
``torchrun`` stop the others (a non-zero exit). Every file is written under a temporary name
and renamed, so no half-written output is left either way.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from ..device import resolve_device
from ..distributed import DistInfo, init_distributed, shutdown_distributed

# A collective waits this long for the slowest rank (it may be predicting a large image).
TIMEOUT_MINUTES = 24 * 60


def join(device: str) -> DistInfo:
    """Join the process group of ``torchrun`` (if launched by it; left when the process
    exits); one process otherwise."""
    info = init_distributed(device, timeout_minutes=TIMEOUT_MINUTES)
    if info.enabled:
        atexit.register(leave, info)
    return info


def leave(info: DistInfo) -> None:
    shutdown_distributed(info)


def rank_device(device: str, info: DistInfo) -> str:
    """The device this rank predicts on: ``auto`` / ``cuda`` mean its own (LOCAL_RANK) GPU."""
    if not info.enabled or not (device == "auto" or device == "cuda"):
        return device
    resolved = resolve_device(device, info.local_rank)
    return str(resolved) if resolved.type == "cuda" else device


def balanced_owners(weights: list[int], world_size: int) -> list[int]:
    """The rank of each image: greedy by size (largest first, each to the least loaded rank;
    ties to the earlier image and the lower rank), the same on every rank."""
    loads = [0] * world_size
    owners = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += max(int(weights[i]), 1)
    return owners


def pixel_weight(path: str | os.PathLike) -> int:
    """Pixels of an image from its header (no decoding); its size in bytes if the header
    cannot be read (the file is reported when it is predicted)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(image.size[0]) * int(image.size[1])
    except Exception:  # noqa: BLE001 - any unreadable header: a fallback weight, no error here
        try:
            return int(os.path.getsize(path))
        except OSError:
            return 1


def my_share(paths: list, info: DistInfo) -> set[int]:
    """Indices (into ``paths``, images read whole) that this rank predicts: all of them in
    one process, a pixel-balanced share under ``torchrun``."""
    if not info.enabled or info.world_size == 1:
        return set(range(len(paths)))
    owners = balanced_owners([pixel_weight(p) for p in paths], info.world_size)
    return {i for i, rank in enumerate(owners) if rank == info.rank}


def strip_share(count: int, info: DistInfo) -> range:
    """This rank's contiguous run of ``count`` strips (the runs differ in length by <= 1)."""
    start = count * info.rank // info.world_size
    return range(start, count * (info.rank + 1) // info.world_size)


def gather(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * info.world_size
    dist.all_gather_object(values, value)
    return values


def agree(error: str | None, info: DistInfo) -> str | None:
    """The first rank's error message, if any rank has one (every rank gets the same)."""
    return next((e for e in gather(error, info) if e is not None), None)
