"""Device and precision choices shared by training and prediction."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

import torch

from .config import PRECISIONS
from .errors import UnetkitError


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> the (local) CUDA GPU when there is one, else the CPU; others as given.

    Raises:
        UnetkitError: CUDA asked for but not available.
    """
    name = str(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnetkitError(f"device {name} asked for, but CUDA is not available on this machine")
    return device


def resolve_workers(workers: int, device: torch.device) -> int:
    """``-1`` (auto) -> data-loading processes for training on ``device``; others as given.

    0 on a CPU: the training step uses every core, and loading is a small part of a step.
    On a GPU, ``min(8, CPUs per GPU - 1)``: loading in the training process would leave the
    GPU waiting on the host. The CPUs per GPU are this process's CPUs over
    ``LOCAL_WORLD_SIZE`` (torchrun's processes on this machine).
    """
    if workers >= 0:
        return workers
    if device.type != "cuda":
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, cpus // local - 1))


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 / AMX), i.e. fast."""
    with contextlib.suppress(AttributeError, RuntimeError):
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA with bf16 (else fp16) and on CPUs with native bf16 (else fp32).

    Raises:
        UnetkitError: an unknown name, or fp16 on a CPU.
    """
    if precision not in PRECISIONS:
        raise UnetkitError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UnetkitError("precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None for fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(device: torch.device, precision: str):
    """An autocast context for a resolved precision (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_memory() -> int:
    """Bytes of memory this process can still take without swapping: the kernel's
    ``MemAvailable`` (free memory plus the page cache it can reclaim), else the free pages
    (``SC_AVPHYS_PAGES``, which leave the page cache out), else 2 GiB.

    The one measure behind the memory-sized decisions: the tile size of a prediction
    (``unetkit.infer.tiling.auto_tiling``) and whether a training set is cached in memory
    (``unetkit.data.dataset``).
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**31


def keep_large_buffers() -> bool:
    """Make glibc keep freed large buffers instead of returning them to the OS.

    Every training step (and every batch of tiles) allocates and frees the same large
    activation buffers; glibc serves them with fresh mmap()s that page-fault on first touch.
    Disabling mmap for large blocks and heap trimming lets them be reused
    (``bench/train_step.py`` has the row). Process-wide; returns False where this is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = libc.mallopt(m_trim_threshold, 2**30) == 1 and ok
        return ok
    except (OSError, AttributeError, TypeError):
        return False


def performance_setup() -> dict[str, bool]:
    """The process-wide performance settings, in one explicit call: the ``unetkit`` commands
    that run a network (train, predict, evaluate, demo) make it first; Python API users call
    it if they want the same speed (nothing in the library changes the process by itself).

    Today: glibc keeps freed large buffers (``keep_large_buffers``, a faster training step on
    CPUs). The memory a process holds then stays at its
    high-water mark instead of shrinking between steps.

    Returns:
        What was applied, by name.
    """
    return {"keep_large_buffers": keep_large_buffers()}
