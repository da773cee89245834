"""An exponential moving average of a model's weights (the weights validation scores)."""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """``avg = d * avg + (1 - d) * w`` after every optimizer step, with a warm-up decay
    ``min(decay, (1 + t) / (10 + t))`` so the first steps are not dominated by the random
    initial weights. Buffers (BatchNorm statistics) are copied, not averaged.

    Args:
        model: the (unwrapped) model being trained; its copy holds the average.
        decay: the long-run decay in (0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = model
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        t = self.updates
        d = min(self.decay, (1 + t) / (10 + t))
        avg: list[torch.Tensor] = [p for p in self.model.parameters()]
        new = [p.detach() for p in self.source.parameters()]
        torch._foreach_lerp_(avg, new, 1.0 - d)
        for a, b in zip(self.model.buffers(), self.source.buffers()):
            a.copy_(b)
