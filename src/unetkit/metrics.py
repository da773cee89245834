"""Segmentation metrics: an exact confusion matrix, and the ISBI 2012 Rand and pixel errors.

:class:`ConfusionMatrix` accumulates (ground truth, prediction) pixel counts on the device of
the predictions, without a host sync per update, and reduces across processes with one
``all_reduce``. ``compute`` turns it into per-class IoU / Dice / precision / recall, mean IoU,
mean foreground Dice and pixel accuracy.

:func:`adapted_rand_error` is the ISBI 2012 / SNEMI3D "adapted Rand error" (Arganda-Carreras et
al. 2015, Front. Neuroanat. 9:142), with the same definition as scikit-image's
``skimage.metrics.adapted_rand_error`` (ground-truth label 0 excluded, alpha = 0.5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import sparse

from .errors import UnetkitError
from .objects.labels import regions_of


def _paired(pred: Any, gt: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as arrays of one shape, or an error naming ``what`` and both shapes."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise UnetkitError(f"{what}: prediction shape {pred.shape} != ground truth {gt.shape}")
    return pred, gt


def _as_tensor(array: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """An int64 tensor on ``device`` (numpy arrays are copied once)."""
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(np.ascontiguousarray(array))
    return array.to(device=device, dtype=torch.int64, non_blocking=True)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


class ConfusionMatrix:
    """Accumulating K x K pixel confusion matrix: rows = ground truth, columns = prediction.

    Pixels whose target is ``ignore_index`` or outside [0, K) are skipped; so are pixels whose
    prediction is outside [0, K) (argmax/threshold outputs never are).

    Args:
        num_classes: K.
        ignore_index: target value to skip.
        device: where the counts live; None = the device of the first update (CPU until then).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Any = None):
        if num_classes < 1:
            raise UnetkitError(f"metrics: num_classes must be >= 1; got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._follow_input = device is None
        self.matrix = torch.zeros(
            (num_classes, num_classes), dtype=torch.int64, device=device or "cpu"
        )

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add the pixels of one batch.

        Args:
            pred: int class map of any shape (e.g. (B, H, W)), tensor or numpy array.
            target: int class map of the same shape; ``ignore_index`` pixels are skipped.

        Raises:
            UnetkitError: shapes differ.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise UnetkitError(
                f"metrics: prediction shape {tuple(pred.shape)} != target shape "
                f"{tuple(target.shape)}"
            )
        if self._follow_input and isinstance(pred, torch.Tensor):
            if pred.device != self.matrix.device:
                self.matrix = self.matrix.to(pred.device)
            self._follow_input = False
        k = self.num_classes
        p = _as_tensor(pred, self.matrix.device).reshape(-1)
        t = _as_tensor(target, self.matrix.device).reshape(-1)
        valid = (t >= 0) & (t < k) & (t != self.ignore_index) & (p >= 0) & (p < k)
        # Invalid pixels go to an extra bin k*k that is dropped: no boolean indexing, no sync.
        index = torch.where(valid, t * k + p, torch.full_like(t, k * k))
        if index.device.type == "cpu":
            counts = torch.bincount(index, minlength=k * k + 1)
        else:  # CUDA bincount syncs to size its output; 1-D scatter_add_ is deterministic
            counts = torch.zeros(k * k + 1, dtype=torch.int64, device=index.device)
            counts.scatter_add_(0, index, torch.ones_like(index))
        self.matrix += counts[: k * k].view(k, k)

    def reduce_from_all_processes(self) -> None:
        """Sum the counts over all ranks (one ``all_reduce``); a no-op without a process group."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.matrix)

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """Metrics from the counts so far.

        Args:
            class_names: K names for ``per_class``; default ``"0"``, ``"1"``, ...

        Returns:
            ``per_class``: {name: {iou, dice, precision, recall, support}} (floats; None where
            undefined: iou/dice for a class in neither gt nor prediction, precision for a class
            never predicted, recall for a class absent from gt; support = gt pixel count, int);
            ``mean_iou`` over classes in gt or prediction; ``mean_iou_foreground`` and
            ``mean_dice`` over classes 1..K-1 (class 0 alone when K == 1); ``pixel_accuracy``;
            ``pixel_error`` = 1 - accuracy; ``pixels`` counted. Means are None when no class
            qualifies; accuracy/error are None when no pixel was counted.

        Raises:
            UnetkitError: ``class_names`` is not of length K.
        """
        k = self.num_classes
        names = [str(c) for c in range(k)] if class_names is None else list(class_names)
        if len(names) != k:
            raise UnetkitError(f"metrics: {len(names)} class names given for {k} classes")
        m = self.matrix.detach().cpu().to(torch.float64).numpy()
        tp = np.diag(m)
        support, predicted = m.sum(1), m.sum(0)
        fp, fn = predicted - tp, support - tp
        iou = _ratio(tp, tp + fp + fn)
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        per_class = {
            name: {
                "iou": _float_or_none(iou[c]),
                "dice": _float_or_none(dice[c]),
                "precision": _float_or_none(precision[c]),
                "recall": _float_or_none(recall[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(names)
        }
        foreground = slice(1, None) if k > 1 else slice(0, 1)
        total = m.sum()
        accuracy = float(tp.sum() / total) if total > 0 else None
        return {
            "per_class": per_class,
            "mean_iou": _nanmean(iou),
            "mean_iou_foreground": _nanmean(iou[foreground]),
            "mean_dice": _nanmean(dice[foreground]),
            "pixel_accuracy": accuracy,
            "pixel_error": None if accuracy is None else 1.0 - accuracy,
            "pixels": int(total),
        }


def confusion_from_arrays(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """A :class:`ConfusionMatrix` filled with one prediction/target pair.

    Args:
        pred: int class map, any shape.
        target: int class map, same shape.
        num_classes: K.
        ignore_index: target value to skip.

    Returns:
        The matrix object (``.matrix`` (K, K) int64, ``.compute()`` for the metrics).
    """
    device = pred.device if isinstance(pred, torch.Tensor) else None
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    matrix.update(pred, target)
    return matrix


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel any int ids to 0..n-1 (``np.unique`` inverse), returning (ids, n)."""
    values, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1), values.size


def adapted_rand_error(pred_labels: np.ndarray, gt_labels: np.ndarray) -> float:
    """ISBI 2012 adapted Rand error: 1 - F-score of Rand split (precision) and merge (recall).

    With n_ij the pixel counts of the contingency table (gt segment i, predicted segment j),
    restricted to pixels whose gt label is not 0, a_i = sum_j n_ij and b_j = sum_i n_ij:
    precision = sum n_ij^2 / sum b_j^2, recall = sum n_ij^2 / sum a_i^2, and the error is
    ``1 - 2 P R / (P + R) = 1 - 2 sum n_ij^2 / (sum a_i^2 + sum b_j^2)``. Predicted label 0 is
    an ordinary segment (as in scikit-image), not excluded.

    Args:
        pred_labels: int segment ids, any shape.
        gt_labels: int segment ids, same shape; 0 = boundary / unlabelled, not scored.

    Returns:
        The error in [0, 1); 0.0 for identical segmentations or when gt has no label > 0.

    Raises:
        UnetkitError: shapes differ.
    """
    pred_labels, gt_labels = _paired(pred_labels, gt_labels, "rand error")
    scored = gt_labels != 0
    if not scored.any():
        return 0.0
    gt_ids, n_gt = _compact(gt_labels[scored])
    pred_ids, n_pred = _compact(pred_labels[scored])
    ones = np.ones(gt_ids.size, dtype=np.int64)
    table = sparse.coo_matrix((ones, (gt_ids, pred_ids)), shape=(n_gt, n_pred)).tocsr()
    table.sum_duplicates()
    sum_ij = float(np.square(table.data.astype(np.float64)).sum())
    sum_gt = float(np.square(np.bincount(gt_ids).astype(np.float64)).sum())
    sum_pred = float(np.square(np.bincount(pred_ids).astype(np.float64)).sum())
    return 1.0 - 2.0 * sum_ij / (sum_gt + sum_pred)


def membrane_rand_error(
    pred_mask: np.ndarray, gt_mask: np.ndarray, membrane: int = 1, ignore_index: int = 255
) -> float:
    """Adapted Rand error of two membrane masks (ISBI 2012: membrane = 1, cells = 0).

    The cells of each mask are the 4-connected components of its non-membrane pixels; membrane
    pixels get label 0 (in gt: not scored; in the prediction: one ordinary segment, so thick
    predicted membranes inside gt cells count as merges). Ignored gt pixels are not scored.

    Args:
        pred_mask: int class map (H, W).
        gt_mask: int class map (H, W), same shape.
        membrane: the membrane class value.
        ignore_index: gt value excluded from scoring.

    Returns:
        The adapted Rand error (see :func:`adapted_rand_error`).

    Raises:
        UnetkitError: shapes differ or a mask is not 2-D.
    """
    pred_mask, gt_mask = np.asarray(pred_mask), np.asarray(gt_mask)
    if pred_mask.shape != gt_mask.shape or gt_mask.ndim != 2:
        raise UnetkitError(
            f"rand error: masks must be 2-D and equal in shape; got {pred_mask.shape} "
            f"and {gt_mask.shape}"
        )
    # 4-connected regions: a membrane drawn as an 8-connected 1-pixel line still separates two
    # cells; a prediction has no ignored pixels (-1: no value is left out)
    pred_cells = regions_of(pred_mask, membrane, ignore_index=-1)
    gt_cells = regions_of(gt_mask, membrane, ignore_index)
    return adapted_rand_error(pred_cells, gt_cells)


def pixel_error(pred_mask: np.ndarray, gt_mask: np.ndarray, ignore_index: int = 255) -> float:
    """Fraction of non-ignored pixels where the predicted class differs from the ground truth.

    Args:
        pred_mask: int class map, any shape.
        gt_mask: int class map, same shape; ``ignore_index`` pixels are not counted.

    Returns:
        The error in [0, 1]; 0.0 when every pixel is ignored.

    Raises:
        UnetkitError: shapes differ.
    """
    pred_mask, gt_mask = _paired(pred_mask, gt_mask, "pixel error")
    counted = gt_mask != ignore_index
    total = int(counted.sum())
    return float((pred_mask[counted] != gt_mask[counted]).sum() / total) if total else 0.0
