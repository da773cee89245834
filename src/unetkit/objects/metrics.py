"""Object-level metrics: predicted objects matched to true objects by IoU.

Definitions (one image; objects are the positive ids of two label images):

* a predicted and a true object **match at threshold t** when their IoU is above t. For
  t >= 0.5 a match is unique (two objects cannot both overlap one object by more than half of
  their union), so no assignment problem arises: TP(t) = number of pairs with IoU > t,
  FP(t) = predicted objects without a match, FN(t) = true objects without a match;
* **AP(t)** = TP / (TP + FP + FN): the "average precision" of the Data Science Bowl 2018
  (Caicedo et al., Nature Methods 2019), and ``map`` its mean over t = 0.50, 0.55, ..., 0.95
  (the DSB 2018 score of one image);
* **precision / recall / F1** at t = 0.5: TP / (TP + FP), TP / (TP + FN), their harmonic mean;
* **panoptic quality** (Kirillov et al., CVPR 2019) at t = 0.5: SQ = mean IoU of the matched
  pairs, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ x RQ;
* **merges**: predicted objects that hold more than half of each of two or more true objects
  (touching objects left unseparated); **splits**: true objects that hold more than half of
  each of two or more predicted objects;
* **count error**: predicted minus true object count.

With class maps, only objects of the same class can match (the scores pool the classes).
An image with no true and no predicted object has no score (None): it is skipped in the
per-image means rather than counted as perfect. Pooled figures sum TP / FP / FN and matched
IoU over images first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95


@dataclass
class Overlaps:
    """The overlapping (predicted, true) pairs of one image, with the sizes of every object."""

    pred_ids: np.ndarray  # (P,) ids of the predicted objects
    true_ids: np.ndarray  # (T,) ids of the true objects
    pred_area: np.ndarray  # (P,) pixels
    true_area: np.ndarray  # (T,)
    pair_pred: np.ndarray  # (M,) index into pred_ids
    pair_true: np.ndarray  # (M,) index into true_ids
    inter: np.ndarray  # (M,) pixels in both

    @property
    def iou(self) -> np.ndarray:
        union = self.pred_area[self.pair_pred] + self.true_area[self.pair_true] - self.inter
        return self.inter / np.maximum(union, 1)


def _ids_and_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids present (sorted), their pixel counts, and each pixel's index into the ids (-1 = 0)."""
    ids, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    index = inverse.astype(np.int64) - (1 if ids.size and ids[0] == 0 else 0)
    if ids.size and ids[0] == 0:
        ids, counts = ids[1:], counts[1:]
    return ids, counts.astype(np.int64), index


def overlaps(
    pred: np.ndarray,
    truth: np.ndarray,
    pred_classes: dict[int, int] | None = None,
    true_classes: dict[int, int] | None = None,
) -> Overlaps:
    """Every overlapping pair of a predicted and a true object (sparse: no P x T matrix).

    Raises:
        ValueError: the two label images differ in shape.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    pred_ids, pred_area, p_index = _ids_and_areas(pred)
    true_ids, true_area, t_index = _ids_and_areas(truth)
    both = (p_index >= 0) & (t_index >= 0)
    key = p_index[both] * max(len(true_ids), 1) + t_index[both]
    pairs, inter = np.unique(key, return_counts=True)
    pair_pred, pair_true = np.divmod(pairs, max(len(true_ids), 1))
    if pred_classes is not None and true_classes is not None and len(pairs):
        same = np.array(
            [
                pred_classes.get(int(pred_ids[p])) == true_classes.get(int(true_ids[t]))
                for p, t in zip(pair_pred, pair_true)
            ],
            dtype=bool,
        )
        pair_pred, pair_true, inter = pair_pred[same], pair_true[same], inter[same]
    return Overlaps(pred_ids, true_ids, pred_area, true_area, pair_pred, pair_true, inter)


def _merges(ov: Overlaps) -> tuple[int, int]:
    """(predicted objects covering > 1/2 of each of >= 2 true objects, the converse)."""
    held_true = ov.inter * 2 > ov.true_area[ov.pair_true]  # the pair holds most of the true one
    merges = np.bincount(ov.pair_pred[held_true], minlength=len(ov.pred_ids))
    held_pred = ov.inter * 2 > ov.pred_area[ov.pair_pred]
    splits = np.bincount(ov.pair_true[held_pred], minlength=len(ov.true_ids))
    return int((merges >= 2).sum()), int((splits >= 2).sum())


def _counts(ov: Overlaps) -> dict[str, Any]:
    """TP per threshold, the matched IoU sum at 0.5, object counts, merges and splits."""
    iou = ov.iou
    tp = [int((iou > t).sum()) for t in THRESHOLDS]
    merges, splits = _merges(ov)
    return {
        "n_pred": len(ov.pred_ids),
        "n_true": len(ov.true_ids),
        "tp": tp,
        "iou_sum": float(iou[iou > 0.5].sum()),
        "merges": merges,
        "splits": splits,
    }


def _scores(c: dict[str, Any]) -> dict[str, Any]:
    """Scores from summed counts (one image, or pooled over images)."""
    n_pred, n_true, tp = c["n_pred"], c["n_true"], c["tp"]
    out: dict[str, Any] = {"n_true": n_true, "n_pred": n_pred, "count_error": n_pred - n_true}
    out.update(merges=c["merges"], splits=c["splits"])
    if n_pred == 0 and n_true == 0:
        for key in ("map", "ap_50", "ap_75", "precision_50", "recall_50", "f1_50"):
            out[key] = None
        out.update(pq=None, sq=None, rq=None)
        return out
    ap = [t / (n_pred + n_true - t) for t in tp]  # TP / (TP + FP + FN)
    out["map"] = float(np.mean(ap))
    out["ap_50"], out["ap_75"] = ap[0], ap[THRESHOLDS.index(0.75)]
    t50 = tp[0]
    out["precision_50"] = t50 / n_pred if n_pred else 0.0
    out["recall_50"] = t50 / n_true if n_true else 0.0
    out["f1_50"] = 2 * t50 / (n_pred + n_true)
    out["sq"] = c["iou_sum"] / t50 if t50 else 0.0
    out["rq"] = t50 / (t50 + 0.5 * (n_pred - t50) + 0.5 * (n_true - t50))
    out["pq"] = out["sq"] * out["rq"]
    return out


def object_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    pred_classes: dict[int, int] | None = None,
    true_classes: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Object metrics of one image (see the module docstring).

    Args:
        pred: (H, W) predicted object ids, 0 = background.
        truth: (H, W) true object ids, 0 = background.
        pred_classes, true_classes: each object's class; with both, only objects of the same
            class match.

    Returns:
        ``n_true``, ``n_pred``, ``count_error``, ``merges``, ``splits``, ``map``, ``ap_50``,
        ``ap_75``, ``precision_50``, ``recall_50``, ``f1_50``, ``pq``, ``sq``, ``rq`` (the
        scores None when the image has no object at all).
    """
    return _scores(_counts(overlaps(pred, truth, pred_classes, true_classes)))


PER_IMAGE_KEYS = ("n_true", "n_pred", "map", "ap_50", "ap_75", "f1_50", "pq", "merges", "splits")


@dataclass
class ObjectTally:
    """Object metrics accumulated over images: per-image means and pooled figures.

    ``summary()`` gives ``images``, ``n_true``, ``n_pred`` (totals), ``map``, ``ap_50``,
    ``ap_75``, ``f1_50`` (means over the images that have objects: the DSB 2018 convention),
    ``count_error`` (mean absolute count error per image), ``pq`` / ``sq`` / ``rq`` and
    ``precision_50`` / ``recall_50`` (pooled over all objects), ``pooled_map`` and
    ``pooled_ap_50`` (TP / FP / FN summed before the ratio), ``merges`` / ``splits``
    (totals).
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    _sum: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        pred: np.ndarray,
        truth: np.ndarray,
        pred_classes: dict[int, int] | None = None,
        true_classes: dict[int, int] | None = None,
    ) -> dict[str, Any]:
        """Score one image, add it to the tally and return its scores."""
        counts = _counts(overlaps(pred, truth, pred_classes, true_classes))
        if not self._sum:
            self._sum = {k: (list(v) if isinstance(v, list) else v) for k, v in counts.items()}
        else:
            for key, value in counts.items():
                if isinstance(value, list):
                    self._sum[key] = [a + b for a, b in zip(self._sum[key], value)]
                else:
                    self._sum[key] += value
        scores = _scores(counts)
        self.images.append(scores)
        return scores

    def summary(self) -> dict[str, Any]:
        if not self.images:
            return {"images": 0}
        pooled = _scores(self._sum)

        def mean(key: str) -> float | None:
            values = [s[key] for s in self.images if s[key] is not None]
            return float(np.mean(values)) if values else None

        return {
            "images": len(self.images),
            "n_true": pooled["n_true"],
            "n_pred": pooled["n_pred"],
            "map": mean("map"),
            "ap_50": mean("ap_50"),
            "ap_75": mean("ap_75"),
            "f1_50": mean("f1_50"),
            "count_error": float(np.mean([abs(s["count_error"]) for s in self.images])),
            "pq": pooled["pq"],
            "sq": pooled["sq"],
            "rq": pooled["rq"],
            "precision_50": pooled["precision_50"],
            "recall_50": pooled["recall_50"],
            "pooled_map": pooled["map"],
            "pooled_ap_50": pooled["ap_50"],
            "merges": pooled["merges"],
            "splits": pooled["splits"],
        }
