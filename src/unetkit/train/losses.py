"""Training losses: cross-entropy, BCE, soft Dice, their sums, MSE/L1.

Every loss takes ``(outputs, target, weight=None)`` and returns a float32 scalar:

- ``multiclass``: logits (B, K, H, W), target int64 (B, H, W) in [0, K) or ``ignore_index``.
- ``binary``: logits (B, 1, H, W), target int64 (B, H, W) in {0, 1} or ``ignore_index``.
- ``regression``: output (B, C, H, W) float, target float (B, C, H, W) (or (B, H, W) when C == 1);
  NaN targets are ignored (there is no integer ignore index for float targets).

``weight`` is an optional per-pixel weight map (B, H, W), e.g. from
:func:`unetkit.train.weightmap.border_weight_map`.

The instance heads' losses wrap a multiclass loss: ``unetkit.train.head_losses``.
Ignored pixels contribute to neither numerator nor denominator of any loss, Dice included. Losses
are computed in float32 whatever the autocast dtype, so they are safe under bf16/fp16 autocast.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnetkitError

LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {
    "multiclass": ("ce", "dice", "ce+dice"),
    "binary": ("bce", "dice", "bce+dice"),
    "regression": ("mse", "l1"),
}


def _check_pixels(
    outputs: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    channels: int | None = None,
    dense_target: bool = False,
) -> None:
    """Raise a one-line error when outputs, target and weight map disagree in shape.

    Class targets are (B, H, W); with ``dense_target`` (regression) (B, C, H, W) is allowed too.
    """
    if outputs.dim() != 4 or outputs.shape[1] != (channels or outputs.shape[1]):
        raise UnetkitError(
            f"loss: outputs must be (B, {channels or 'C'}, H, W); got {tuple(outputs.shape)}"
        )
    expected = (outputs.shape[0], *outputs.shape[2:])
    shape = tuple(target.shape)
    if shape != expected and not (dense_target and shape == tuple(outputs.shape)):
        wanted = f"{expected} or {tuple(outputs.shape)}" if dense_target else str(expected)
        raise UnetkitError(
            f"loss: target shape {shape} does not match outputs {tuple(outputs.shape)}; "
            f"expected {wanted} (with valid padding, crop the target to the model's output_size)"
        )
    if weight is not None and tuple(weight.shape) != expected:
        raise UnetkitError(
            f"loss: weight map shape {tuple(weight.shape)} does not match (B, H, W) = {expected}"
        )


def _weighted_mean(values: torch.Tensor, pixel_weights: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w); 0 (still differentiable) when every weight is 0."""
    total = pixel_weights.sum()
    return (pixel_weights * values).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def _pixel_weights(
    valid: torch.Tensor,
    class_index: torch.Tensor,
    class_weights: torch.Tensor | None,
    weight: torch.Tensor | None,
) -> torch.Tensor:
    """Per-pixel weights (B, H, W) float32: 0 on ignored pixels, class weight x weight map else."""
    w = valid.float()
    if class_weights is not None:
        w = w * class_weights.to(device=w.device, dtype=torch.float32)[class_index]
    if weight is not None:
        w = w * weight.to(device=w.device, dtype=torch.float32)
    return w


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy on multi-class logits, with ignore index, class and pixel weights.

    With ``class_weights`` w_c and a weight map m, the loss is
    ``sum_i w_{y_i} m_i CE_i / sum_i w_{y_i} m_i`` over non-ignored pixels i, i.e. torch's
    ``weight=`` mean reduction extended by the per-pixel map.
    """

    class_weights: torch.Tensor | None  # a buffer

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pixels(logits, target, weight)
        valid = target != self.ignore_index
        index = torch.where(valid, target, torch.zeros_like(target))
        nll = F.cross_entropy(logits.float(), index, reduction="none")  # (B, H, W)
        return _weighted_mean(nll, _pixel_weights(valid, index, self.class_weights, weight))


class BinaryCrossEntropyLoss(nn.Module):
    """Sigmoid BCE on one logit channel, with ignore index, class and pixel weights.

    ``class_weights`` is either (2,) = weights of [background, foreground] pixels, normalised like
    :class:`CrossEntropyLoss`, or (1,) = the foreground weight alone (torch's ``pos_weight``
    idea), which is the same as ``[1, w]``.
    """

    class_weights: torch.Tensor | None  # a buffer

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        if class_weights is not None and class_weights.numel() == 1:
            class_weights = torch.cat([torch.ones(1), class_weights.reshape(1).float().cpu()])
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pixels(logits, target, weight, channels=1)
        valid = target != self.ignore_index
        positive = (target == 1) & valid
        bce = F.binary_cross_entropy_with_logits(
            logits[:, 0].float(), positive.float(), reduction="none"
        )  # (B, H, W)
        w = _pixel_weights(valid, positive.long(), self.class_weights, weight)
        return _weighted_mean(bce, w)


class DiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean_c (2 |P_c Y_c| + s) / (|P_c| + |Y_c| + s)``, sums over the batch.

    Multi-class: P = softmax probabilities, averaged over all K classes, background included (a
    class absent from the batch scores ~1 once its predicted probabilities are ~0, thanks to
    the smooth term s). Binary: the foreground Dice of the sigmoid probability alone. Ignored
    pixels are removed from P and Y. The pixel weight map is not used by Dice (it is accepted
    and ignored so every loss has one signature).
    """

    def __init__(self, task: str, num_classes: int, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.task, self.num_classes = task, num_classes
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pixels(logits, target, weight, 1 if self.task == "binary" else self.num_classes)
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        if self.task == "binary":
            probs = torch.sigmoid(logits.float())  # (B, 1, H, W)
            onehot = (target == 1).unsqueeze(1)
        else:
            probs = torch.softmax(logits.float(), dim=1)  # (B, K, H, W)
            classes = torch.arange(logits.shape[1], device=target.device).view(1, -1, 1, 1)
            onehot = target.unsqueeze(1) == classes  # (B, K, H, W); never true for ignore_index
        probs = probs * valid
        onehot = (onehot & valid).float()
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)  # (K,)
        cardinality = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        return 1 - dice.mean()


class RegressionLoss(nn.Module):
    """Pixel-wise MSE (``kind="mse"``) or L1 (``kind="l1"``) for image-to-image models.

    NaN targets are ignored; the optional weight map (B, H, W) weights every channel of a pixel.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(
        self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pixels(outputs, target, weight, dense_target=True)
        outputs = outputs.float()
        target = target.to(outputs.dtype)
        if target.dim() == 3:
            target = target.unsqueeze(1)  # (B, 1, H, W), broadcast only when C == 1
            if outputs.shape[1] != 1:
                raise UnetkitError(
                    f"loss: target (B, H, W) needs a 1-channel output; got {tuple(outputs.shape)}"
                )
        valid = ~torch.isnan(target)
        diff = torch.where(valid, outputs - target, torch.zeros_like(outputs))
        values = diff.square() if self.kind == "mse" else diff.abs()
        w = valid.float()
        if weight is not None:
            w = w * weight.to(device=w.device, dtype=torch.float32).unsqueeze(1)
        return _weighted_mean(values, w.expand_as(values))


class SumLoss(nn.Module):
    """A weighted sum of losses sharing one signature, e.g. CE + Dice."""

    def __init__(self, terms: list[nn.Module], factors: list[float]):
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.factors = list(factors)

    def forward(
        self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        total = self.terms[0](outputs, target, weight) * self.factors[0]
        for term, factor in zip(self.terms[1:], self.factors[1:]):
            total = total + factor * term(outputs, target, weight)
        return total


def build_loss(
    name: str,
    task: str,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
    dice_factor: float = 1.0,
) -> nn.Module:
    """Build the training loss named ``name`` for ``task``.

    Args:
        name: ``ce``, ``dice``, ``ce+dice`` (multiclass); ``bce``, ``dice``, ``bce+dice``
            (binary); ``mse``, ``l1`` (regression).
        task: ``multiclass``, ``binary`` or ``regression``.
        num_classes: K, the logit channels for multiclass; 1 or 2 for binary (one sigmoid
            channel either way); output channels for regression (not checked).
        ignore_index: target value that no loss counts.
        class_weights: float (K,) for CE; (2,) [background, foreground] or (1,) foreground-only
            for BCE. Not used by Dice or regression losses.
        smooth: Dice smooth term s.
        dice_factor: factor of the Dice term in ``ce+dice`` / ``bce+dice``.

    Returns:
        An ``nn.Module`` called as ``loss(outputs, target, weight=None) -> scalar`` (float32).

    Raises:
        UnetkitError: an unknown task, a name not valid for the task, or class weights of the
            wrong length.
    """
    if task not in LOSSES_BY_TASK:
        raise UnetkitError(f"loss: unknown task {task!r}; valid: {', '.join(LOSSES_BY_TASK)}")
    valid_names = LOSSES_BY_TASK[task]
    if name not in valid_names:
        raise UnetkitError(
            f"loss: {name!r} is not a {task} loss; valid for {task}: {', '.join(valid_names)}"
        )
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
        allowed = (num_classes,) if task == "multiclass" else (1, 2)
        if task != "regression" and class_weights.numel() not in allowed:
            raise UnetkitError(
                f"loss: class_weights has {class_weights.numel()} values; {task} with "
                f"{num_classes} classes needs {' or '.join(map(str, allowed))}"
            )
    if task == "regression":
        return RegressionLoss(name)
    pixel_loss = CrossEntropyLoss if task == "multiclass" else BinaryCrossEntropyLoss
    dice = DiceLoss(task, num_classes, ignore_index, smooth)
    if name == "dice":
        return dice
    cross = pixel_loss(ignore_index, class_weights)
    if "+" not in name:
        return cross
    return SumLoss([cross, dice], [1.0, dice_factor])


def inverse_frequency_weights(class_share: list[float]) -> torch.Tensor:
    """Class weights proportional to 1 / share, with mean 1 over the classes that occur.

    Args:
        class_share: fraction (or count) of pixels per class, length K, non-negative.

    Returns:
        float32 tensor (K,); classes with share 0 get weight 0.

    Raises:
        UnetkitError: a negative share, or no class with a positive share.
    """
    share = np.asarray(class_share, dtype=np.float64).reshape(-1)
    if (share < 0).any() or not (share > 0).any():
        raise UnetkitError(
            f"class weights: shares must be >= 0 with at least one > 0; got {share.tolist()}"
        )
    present = share > 0
    weights = np.zeros_like(share)
    weights[present] = 1.0 / share[present]
    weights[present] /= weights[present].mean()
    return torch.from_numpy(weights.astype(np.float32))
