"""Network tiles left unrun because their window holds only background (``skip`` of
``Predictor.iter_mask_bands``, ``predict --skip-background``).

A skipped window of an image read by region is never read: ``SkippingImage`` hands out a
``Blank`` placeholder of its size, ``blank_aware`` makes that an all-NaN network input (which no
image gives), and ``unless_blank`` runs the network on the other windows of a batch only, the
blank ones counting as probability 1 for class 0 (0 for a one-channel sigmoid).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Skip = Callable[[slice | np.ndarray, slice | np.ndarray], bool]


class Blank(np.ndarray):
    """The window of a tile that the network does not see (``SkippingImage``)."""


class SkippingImage:
    """An image read by region whose background windows (``skip(rows, cols)``) come back as
    ``Blank`` placeholders of the window's size instead of pixels."""

    def __init__(self, image, skip: Skip):
        self.image, self.skip = image, skip
        self.shape, self.path = image.shape, image.path

    def read_region(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
        if not self.skip(rows, cols):
            return self.image.read_region(rows, cols)
        size = [len(range(self.shape[i])[r]) if isinstance(r, slice) else len(r)
                for i, r in enumerate((rows, cols))]  # fmt: skip
        return np.broadcast_to(np.zeros((), np.uint8), (*size, 1)).view(Blank)


def blank_aware(
    prepare: Callable[[np.ndarray], torch.Tensor], channels: int
) -> Callable[[np.ndarray], torch.Tensor]:
    """``prepare``, but a ``Blank`` window becomes an all-NaN input of ``channels`` channels,
    so ``unless_blank`` recognises it in its batch."""

    def run(window: np.ndarray) -> torch.Tensor:
        if isinstance(window, Blank):
            return torch.full((channels, *window.shape[:2]), float("nan"))
        return prepare(window)

    return run


def unless_blank(
    forward: Callable[[torch.Tensor], torch.Tensor],
    output_size: Callable[[tuple[int, int]], tuple[int, int]],
    classes: int,
    device: torch.device,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` (inputs -> probabilities of ``classes`` channels, ``output_size`` of the
    input's size) for the windows of a batch that are not blank (all NaN: ``blank_aware``);
    blank ones get probability 1 for class 0, made on ``device``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        blank = x.flatten(1).isnan().all(1)
        if not bool(blank.any()):
            return forward(x)
        h, w = output_size((int(x.shape[-2]), int(x.shape[-1])))
        out = torch.zeros(len(x), classes, h, w, device=device)
        if classes > 1:
            out[:, 0] = 1.0
        if not bool(blank.all()):
            seen = forward(x[~blank])
            out = out.to(seen.device)
            out[~blank] = seen.to(out.dtype)
        return out

    return run
