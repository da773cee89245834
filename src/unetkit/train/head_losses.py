"""The instance heads' losses: a multiclass class loss (``unetkit.train.losses``) plus the
head's own terms, called like every loss as ``(outputs, target, weight=None)``.

- ``distance`` (:class:`DistanceHeadLoss`): outputs (B, K + 1, H, W), the K class logits and
  one distance logit; target (B, 2, H, W) float, the class index (or ignore index) and the
  normalised distance.
- ``rays`` (:class:`RaysHeadLoss`): R ray channels more in both: outputs (B, K + 1 + R, H,
  W), target (B, 2 + R, H, W) with the ray lengths in pixels.
- ``offsets`` (:class:`OffsetsHeadLoss`): outputs (B, K + 1 + 2, H, W), the K classes and
  the boundary class, then the (x, y) offsets; target (B, 3, H, W), the class index and the
  offsets.

Losses are computed in float32 whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnetkitError
from .losses import _check_pixels, _weighted_mean

DISTANCE_FACTOR = 5.0  # the distance term's factor beside CE + Dice (ObjectConfig's default)


class _HeadLoss(nn.Module):
    """A class loss over the network's class channels plus ``factor`` times a head's term;
    the target's channel 0 holds the class index (or the ignore index), the rest the head's
    maps (``channels`` of them)."""

    head, maps, channels = "", "", 0
    default_factor = 1.0

    def __init__(
        self, classes: nn.Module, ignore_index: int = 255, factor: float | None = None
    ) -> None:
        super().__init__()
        self.classes, self.ignore_index = classes, ignore_index
        self.factor = self.default_factor if factor is None else factor

    def forward(
        self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        total, classes, w = self._class_term(outputs, target, weight)
        if self.factor == 0:
            return total
        return total + self.factor * self._head_term(outputs, target, classes, w)

    def _head_term(
        self, outputs: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        """The head's own term, before ``factor`` (``w``: the pixel weights of
        :meth:`_class_term`)."""
        raise NotImplementedError

    def _class_term(
        self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the class loss on all but the head's last channels, the class index, the pixel
        weights of the head's term: 0 where ignored, else the weight map's)."""
        if target.dim() != 4 or target.shape[1] != 1 + self.channels or outputs.dim() != 4:
            raise UnetkitError(
                f"loss: the {self.head} head needs a (B, {1 + self.channels}, H, W) target "
                f"(class, {self.maps}); got {tuple(target.shape)}"
            )
        classes = target[:, 0].round().long()
        _check_pixels(outputs[:, : -self.channels], classes, weight)
        total = self.classes(outputs[:, : -self.channels], classes, weight)
        w = (classes != self.ignore_index).float()
        if weight is not None:
            w = w * weight.to(device=w.device, dtype=torch.float32)
        return total, classes, w


class DistanceHeadLoss(_HeadLoss):
    """The class loss on the first K channels plus ``factor`` times the distance term.

    The distance term is the binary cross-entropy of ``sigmoid(last channel)`` against the
    target distance d in [0, 1] (StarDist trains its object probability the same way) minus
    the entropy of d, so it is 0 for a perfect prediction and its gradient is
    ``sigmoid - d`` (no vanishing gradient at either end, unlike an MSE through a sigmoid).
    It counts every pixel that is not ignored, background (d = 0) included, weighted by the
    pixel weight map like the cross-entropy: with the paper's map from the real instances
    the edges of touching objects and the gaps between objects weigh most, which is where the
    valley that separates two objects must be learnt.

    Args:
        classes: the class loss (e.g. CE + Dice) over K channels.
        ignore_index: class value whose pixels no term counts.
        factor: the distance term's factor (``DISTANCE_FACTOR``).
    """

    head, maps, channels = "distance", "distance", 1
    default_factor = DISTANCE_FACTOR

    def _head_term(
        self, outputs: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        logits = outputs[:, -1].float()
        d = target[:, 1].float().clamp(0, 1)
        bce = F.binary_cross_entropy_with_logits(logits, d, reduction="none")
        entropy = F.binary_cross_entropy(d, d, reduction="none")  # the floor of the BCE
        return _weighted_mean(bce - entropy, w)


RAYS_FACTOR = 1.0  # the ray term's factor (ObjectConfig.rays_weight's default)


class RaysHeadLoss(DistanceHeadLoss):
    """:class:`DistanceHeadLoss` on the first K + 1 channels plus ``rays_factor`` times the ray
    term (StarDist's loss, Schmidt et al. 2018, beside unetkit's class loss).

    The ray term is the mean absolute error, in pixels, of the R predicted ray lengths
    (``scale`` times the last R outputs, linear: the network's outputs stay near 1 whatever
    the objects' size) against the target's, averaged over the rays and weighted per pixel
    by the target's normalised distance d (StarDist's object probability): 1 at an object's
    centre, falling to about 0 at its edge and 0 on background and ignored pixels, so the
    pixels whose polygons best describe their object count most and background not at all;
    divided by the sum of those weights. The paper's border weight map does not enter it.

    Scale of the terms: the distance term (a BCE, about 0.05 once learnt) has
    ``distance_factor`` 5 and a ray error of about 1 px factor 1, the balance of StarDist's
    loss weights (1 for its probability, 0.2 for its distances in pixels). StarDist's
    1e-4 penalty on rays predicted on background is left out (post-processing never reads
    them there).

    Args:
        classes: the class loss over K channels.
        ignore_index: class value whose pixels no term counts.
        distance_factor: the distance (object probability) term's factor.
        rays_factor: the ray term's factor (``RAYS_FACTOR``).
        scale: pixels per unit of the ray outputs (``ObjectConfig.ray_scale``).
    """

    def __init__(
        self,
        classes: nn.Module,
        ignore_index: int = 255,
        distance_factor: float = DISTANCE_FACTOR,
        rays_factor: float = RAYS_FACTOR,
        scale: float = 1.0,
    ) -> None:
        super().__init__(classes, ignore_index, distance_factor)
        self.rays_factor, self.scale = rays_factor, scale

    def forward(
        self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        rays = target.shape[1] - 2 if target.dim() == 4 else -1
        if rays < 1 or outputs.dim() != 4 or outputs.shape[1] < rays + 3:
            raise UnetkitError(
                f"loss: the rays head needs (B, K + 1 + R, H, W) outputs and a (B, 2 + R, H, "
                f"W) target (class, distance, R rays); got {tuple(outputs.shape)} and "
                f"{tuple(target.shape)}"
            )
        total = super().forward(outputs[:, :-rays], target[:, :2], weight)
        if self.rays_factor == 0:
            return total
        classes = target[:, 0].round().long()
        w = target[:, 1].float().clamp(0, 1) * (classes != self.ignore_index).float()
        on = w > 0  # (B, H, W): only object pixels count, so only they are gathered
        predicted = outputs[:, -rays:].permute(0, 2, 3, 1)[on].float() * self.scale  # (N, R)
        error = (predicted - target[:, 2:].permute(0, 2, 3, 1)[on].float()).abs().mean(1)
        return total + self.rays_factor * _weighted_mean(error, w[on])


OFFSETS_FACTOR = 1.0  # the offset term's factor (ObjectConfig.offsets_weight's default)
GRADIENT_FACTOR = 2.0  # HoVer-Net's weight of its gradient term beside its MSE term


class OffsetsHeadLoss(_HeadLoss):
    """The class loss on the K + 1 class channels (the data's and the boundary) plus
    ``factor`` times the offset term (HoVer-Net's, Graham et al. 2019).

    The offset term is the mean squared error of the two offset channels (linear outputs)
    against the target's on every pixel that is not ignored (background's target is 0), plus
    ``GRADIENT_FACTOR`` times the mean squared error of their derivatives along their own axis
    (x along the columns, y along the rows; central differences) on the object pixels: the
    derivative is what post-processing reads (``unetkit.data.offsets.split_lines``), and a
    plain MSE lets the jump between two touching objects blur. Both are weighted per pixel by
    the paper's border weight map, like the class loss: the pixels where two objects meet,
    the jump's few pixels, weigh most.

    Args:
        classes: the class loss over K + 1 channels.
        ignore_index: class value whose pixels no term counts.
        factor: the offset term's factor (``OFFSETS_FACTOR``).
    """

    head, maps, channels = "offsets", "x and y offsets", 2
    default_factor = OFFSETS_FACTOR

    def _head_term(
        self, outputs: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        predicted, true = outputs[:, -2:].float(), target[:, 1:].float()
        squared = (predicted - true).square().sum(1)
        on = w * (classes != 0).float()  # object pixels (class 0: background)
        steep = _axis_gradients(predicted) - _axis_gradients(true)
        term = _weighted_mean(squared, w)
        return term + GRADIENT_FACTOR * _weighted_mean(steep.square().sum(1), on)


def _axis_gradients(offsets: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): d x / d column and d y / d row of (B, 2, H, W) offsets, by central
    differences (0 on the outermost pixels)."""
    out = torch.zeros_like(offsets)
    out[:, 0, :, 1:-1] = (offsets[:, 0, :, 2:] - offsets[:, 0, :, :-2]) / 2
    out[:, 1, 1:-1, :] = (offsets[:, 1, 2:, :] - offsets[:, 1, :-2, :]) / 2
    return out
