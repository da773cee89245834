"""Predicted masks scored against true ones, image by image: the metrics of ``evaluate``.

``score_pairs`` accumulates one confusion matrix over the images (``mean_iou``, ``mean_dice``
(foreground), ``pixel_accuracy``, ``pixel_error``, ``per_class`` IoU / Dice / precision /
recall / support) and one row per image (with ``pixel_error`` for two-class tasks).
Ground-truth pixels equal to the ignore index count nowhere.

Objects are scored too (``unetkit.objects.metrics``: AP at IoU 0.5 / 0.75, the DSB 2018 mean
AP over 0.5:0.95, F1 at 0.5, panoptic quality, count error, merges and splits): per image
(``obj_*`` columns) and pooled (``objects``). Objects given as None are the connected
components of each class of their mask. With more than one object class, objects match only
within their class.

The ISBI 2012 adapted Rand error (``adapted_rand_error``, per image and averaged) is a
membrane / cell-boundary metric: it is computed only when asked for (``rand_error=True``),
never from the class count or names, and only for two classes (membrane = class 1). For
objects on a background it would score the background's connected regions, which means
nothing there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import UnetkitError
from ..metrics import ConfusionMatrix, adapted_rand_error, membrane_rand_error
from ..objects.labels import connected_objects, object_classes
from ..objects.metrics import PER_IMAGE_KEYS, ObjectTally


def _per_image_row(name: str, matrix: ConfusionMatrix, names: list[str], extra: dict) -> dict:
    m = matrix.compute(names)
    row: dict[str, Any] = {"image": name, "pixels": m["pixels"]}
    for key in ("pixel_accuracy", "mean_iou", "mean_dice"):
        row[key] = m[key]
    row.update(extra)
    row.update({f"iou_{n}": m["per_class"][n]["iou"] for n in names})
    return row


def _object_ids(mask: np.ndarray, ids: np.ndarray | None, ignore_index: int) -> np.ndarray:
    return connected_objects(mask, ignore_index=ignore_index) if ids is None else ids


def score_pairs(
    pairs: Iterable[tuple],
    class_names: list[str],
    ignore_index: int = 255,
    rand_error: bool = False,
    objects: bool = True,
    regions: bool = False,
) -> tuple[dict[str, Any], list[dict], np.ndarray]:
    """Accumulate metrics over ``(name, prediction (H, W) int, ground truth (H, W) int)``
    tuples, optionally followed by ``(predicted ids, true ids)`` (each None for the connected
    components of its mask).

    Args:
        pairs: per image its name, predicted and true class maps (same shape)[, object ids].
        class_names: K names, index = class value.
        ignore_index: ground-truth value excluded everywhere.
        rand_error: also compute the ISBI 2012 adapted Rand error (K must be 2, membrane =
            class 1).
        objects: also the object metrics (``obj_*`` per image, ``objects`` pooled).
        regions: the objects are the regions a boundary class separates (``--objects-between``):
            they match whatever the classes under them, and the Rand error compares the object
            ids (predicted against true, true id 0 not scored; any K) instead of the cells of
            two membrane masks. Needs ``objects``.

    Returns:
        ``(metrics, per-image rows, confusion (K, K) int64)``; with K = 2 each row also holds
        ``pixel_error``; with ``rand_error`` the rows and the metrics hold
        ``adapted_rand_error`` (the metrics: its mean over images).

    Raises:
        UnetkitError: ``rand_error`` with K != 2, a prediction and its ground truth differ in
            size, or no pairs.
    """
    k = len(class_names)
    if rand_error and k != 2 and not regions:
        raise UnetkitError(
            f"adapted Rand error needs 2 classes (membrane = class 1); got {k}: {class_names}"
        )
    total = ConfusionMatrix(k, ignore_index)
    rows, rand = [], []
    tally = ObjectTally()
    for name, pred, gt, *ids in pairs:
        if pred.shape != gt.shape:
            raise UnetkitError(
                f"{name}: prediction {pred.shape} and ground truth {gt.shape} differ"
            )
        one = ConfusionMatrix(k, ignore_index)
        one.update(pred, gt)
        total.matrix += one.matrix
        extra = {}
        if k == 2:
            extra["pixel_error"] = one.compute(class_names)["pixel_error"]
        if rand_error and not regions:
            extra["adapted_rand_error"] = membrane_rand_error(pred, gt, 1, ignore_index)
            rand.append(extra["adapted_rand_error"])
        if objects:
            pred_ids, true_ids = (ids + [None, None])[:2]
            pred_ids = _object_ids(pred, pred_ids, ignore_index)
            true_ids = _object_ids(gt, true_ids, ignore_index)
            if pred_ids.shape != pred.shape or true_ids.shape != gt.shape:
                raise UnetkitError(f"{name}: object ids and masks differ in size")
            if rand_error and regions:
                scored = np.where(gt == ignore_index, 0, true_ids)
                extra["adapted_rand_error"] = adapted_rand_error(pred_ids, scored)
                rand.append(extra["adapted_rand_error"])
            classes: tuple = (None, None)
            if k > 2 and not regions:
                classes = (object_classes(pred_ids, pred, k), object_classes(true_ids, gt, k))
            scores = tally.add(pred_ids, true_ids, *classes)
            extra.update({f"obj_{key}": scores[key] for key in PER_IMAGE_KEYS})
        rows.append(_per_image_row(name, one, class_names, extra))
    if not rows:
        raise UnetkitError("nothing to evaluate: no prediction / ground-truth pairs")
    metrics = total.compute(class_names)
    if rand_error:
        metrics["adapted_rand_error"] = float(np.mean(rand))
    if objects:
        metrics["objects"] = tally.summary()
    metrics["images"] = len(rows)
    metrics["classes"] = list(class_names)
    return metrics, rows, total.matrix.cpu().numpy()
