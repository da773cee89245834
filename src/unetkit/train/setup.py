"""Training set-up: optimiser, learning-rate schedule, batch order."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch

from ..config import OPTIMIZERS, SCHEDULES, TrainConfig
from ..errors import UnetkitError


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """Adam (seed default), AdamW, SGD with momentum (the paper: 0.99) or RMSprop (milesial)."""
    name = cfg.optimizer
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise UnetkitError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def build_scheduler(
    cfg: TrainConfig,
    optimizer,
    steps_per_epoch: int,
    budget_used: Callable[[], float] | None = None,
):
    """A per-step LambdaLR (constant / cosine / poly, with linear warm-up) or ReduceLROnPlateau.

    With a time budget, ``budget_used()`` (the share of the budget spent, the same on every
    rank) also drives the schedule, so the learning rate anneals by the end of the budget even
    when ``epochs`` is far away.
    """
    if cfg.schedule not in SCHEDULES:
        raise UnetkitError(f"schedule must be one of {', '.join(SCHEDULES)}; got {cfg.schedule!r}")
    if cfg.schedule == "plateau":
        mode: Literal["min", "max"] = "min" if "loss" in cfg.best_metric else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=0.5, patience=3
        )
    total = max(1, cfg.max_epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        if budget_used is not None:
            t = min(1.0, max(t, budget_used()))
        if cfg.schedule == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "poly":
            return (1 - t) ** 0.9
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_batches(
    n: int, batch: int, steps: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> Iterator[list[int]]:
    """Dataset indices for each of this rank's batches in ``epoch``.

    The global order is a function of (seed, epoch) only: concatenated permutations of the
    dataset, cut into global batches of ``batch * world``; rank r takes its slice of each.
    So a resumed run sees the same batches, and N ranks together see what one process sees.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    need = steps * batch * world
    order: list[int] = []
    while len(order) < need:
        order += torch.randperm(n, generator=g).tolist()
    for s in range(steps):
        start = s * batch * world + rank * batch
        yield order[start : start + batch]
