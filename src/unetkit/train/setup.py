"""Training set-up: optimiser, learning-rate schedule, batch order (each builder takes the
values it uses, not the whole TrainConfig)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, TypeAlias

import torch

from ..config import OPTIMIZERS, SCHEDULES
from ..errors import UnetkitError

Scheduler: TypeAlias = (
    torch.optim.lr_scheduler.LambdaLR | torch.optim.lr_scheduler.ReduceLROnPlateau
)


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Adam, AdamW, SGD with momentum (the paper: 0.99) or RMSprop (milesial).

    ``momentum`` is used by SGD and RMSprop, ``nesterov`` by SGD.
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UnetkitError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    *,
    epochs: int,
    warmup_epochs: float,
    best_metric: str,
    budget_used: Callable[[], float] | None = None,
) -> Scheduler:
    """A per-step LambdaLR (constant / cosine / poly, with linear warm-up over
    ``warmup_epochs``, annealed over ``epochs``) or ReduceLROnPlateau on ``best_metric``
    (minimised when it is a loss, maximised otherwise).

    With a time budget, ``budget_used()`` (the share of the budget spent, the same on every
    rank) also drives the schedule, so the learning rate anneals by the end of the budget even
    when ``epochs`` is far away.
    """
    if name not in SCHEDULES:
        raise UnetkitError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    if name == "plateau":
        mode: Literal["min", "max"] = "min" if "loss" in best_metric else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=0.5, patience=3
        )
    total = max(1, epochs * steps_per_epoch)
    warm = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        if budget_used is not None:
            t = min(1.0, max(t, budget_used()))
        if name == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
        if name == "poly":
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
