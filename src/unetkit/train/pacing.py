"""The run's time: the share of the time budget spent (which stops the run and anneals the
learning rate), when validation is due, and the side jobs held to a share of the time."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..distributed import DistInfo, all_max

VALIDATION_WAIT = 4.0  # auto validation: train 4x as long as the last validation took
CHORE_WAIT = 50.0  # last.pt (save_every 0) and curves.png: at most ~2 % of the time each


class Chore:
    """A recurring side job (writing ``last.pt``, drawing ``curves.png``) held to a share of
    the time: after a run that took ``s`` seconds the next is due ``wait * s`` seconds later
    (on a small model with short epochs, every epoch would cost a sixth of the budget)."""

    def __init__(self, wait: float) -> None:
        self.wait, self.next = wait, 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def run(self, job: Callable[[], None]) -> None:
        start = time.monotonic()
        job()
        end = time.monotonic()
        self.next = end + self.wait * (end - start)


class Pacer:
    """The clock of one run, agreed by all ranks.

    Args:
        time_budget: minutes (0: none).
        val_every: validate every N epochs; 0 (auto): see :meth:`validation_due`.
    """

    def __init__(
        self, time_budget: float, val_every: int, dist: DistInfo, device: torch.device
    ) -> None:
        self.time_budget, self.val_every = time_budget, val_every
        self.dist, self.device = dist, device
        self.start = time.monotonic()
        self.budget_used = 0.0  # share of the time budget spent, agreed by all ranks
        self.val_seconds = 0.0
        self.last_val_end: float | None = None
        self.saving, self.plotting = Chore(CHORE_WAIT), Chore(CHORE_WAIT)

    def begin(self) -> None:
        """The budget counts from here (the first epoch's start)."""
        self.start = time.monotonic()

    def elapsed_min(self) -> float:
        return (time.monotonic() - self.start) / 60

    def out_of_time(self) -> bool:
        """The time budget is spent (never without one); updates ``budget_used``."""
        if self.time_budget <= 0:
            return False
        used = (time.monotonic() - self.start) / (self.time_budget * 60)
        self.budget_used = all_max(used, self.dist, self.device)
        return self.budget_used >= 1.0

    def validation_due(self, epoch: int) -> bool:
        """``val_every`` N: every N epochs. 0 (auto): the first epoch, then whenever training
        has run 4x as long as the last validation took (validation <= ~20 % of the time; on
        big validation images, validating every epoch would halve a time budget's training),
        agreed by all ranks."""
        if self.val_every:
            return epoch % self.val_every == 0
        if self.last_val_end is None:
            return True
        waited = time.monotonic() - self.last_val_end
        due = waited >= VALIDATION_WAIT * self.val_seconds
        return all_max(float(due), self.dist, self.device) > 0

    def validated(self, started: float) -> None:
        """A validation that began at ``started`` (``time.monotonic()``) has ended."""
        self.last_val_end = time.monotonic()
        self.val_seconds = self.last_val_end - started
