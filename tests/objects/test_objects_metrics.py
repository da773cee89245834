"""Object metrics: IoU matching, DSB average precision, panoptic quality, merges and splits."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.objects.metrics import THRESHOLDS, ObjectTally, object_scores, overlaps


def _boxes(shape, boxes) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = i
    return labels


def test_identical_objects_score_one():
    truth = _boxes((40, 40), [(0, 0, 10, 10), (20, 20, 30, 35)])
    s = object_scores(truth, truth)
    assert s["map"] == s["ap_50"] == s["pq"] == s["f1_50"] == 1.0
    assert s["n_true"] == s["n_pred"] == 2 and s["count_error"] == 0
    assert s["merges"] == s["splits"] == 0


def test_ids_do_not_matter():
    truth = _boxes((40, 40), [(0, 0, 10, 10), (20, 20, 30, 35)])
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    assert object_scores(pred, truth)["map"] == 1.0


def test_empty_prediction_scores_zero_not_one():
    truth = _boxes((20, 20), [(2, 2, 8, 8)])
    s = object_scores(np.zeros_like(truth), truth)
    assert s["ap_50"] == 0.0 and s["map"] == 0.0 and s["pq"] == 0.0 and s["recall_50"] == 0.0
    assert s["count_error"] == -1


def test_no_objects_anywhere_has_no_score():
    empty = np.zeros((8, 8), np.int32)
    s = object_scores(empty, empty)
    assert s["map"] is None and s["pq"] is None and s["n_true"] == 0


def test_ap_per_threshold_counts_iou_above_t():
    truth = _boxes((30, 30), [(0, 0, 10, 10)])  # 100 px
    pred = _boxes((30, 30), [(0, 0, 10, 7)])  # 70 px inside: IoU 0.70
    s = object_scores(pred, truth)
    # matched for t in 0.50..0.65 (4 of 10 thresholds), TP=1 FP=0 FN=0 there; else FP=FN=1
    expected = np.mean([1.0 if t < 0.70 else 0.0 for t in THRESHOLDS])
    assert s["map"] == pytest.approx(expected)
    assert s["ap_50"] == 1.0 and s["ap_75"] == 0.0
    assert s["sq"] == pytest.approx(0.7) and s["pq"] == pytest.approx(0.7)


def test_false_positive_and_false_negative():
    truth = _boxes((30, 30), [(0, 0, 10, 10), (20, 20, 25, 25)])
    pred = _boxes((30, 30), [(0, 0, 10, 10), (12, 0, 18, 6), (20, 0, 28, 6)])
    s = object_scores(pred, truth)
    # TP 1, FP 2, FN 1
    assert s["ap_50"] == pytest.approx(1 / 4)
    assert s["precision_50"] == pytest.approx(1 / 3) and s["recall_50"] == pytest.approx(1 / 2)
    assert s["f1_50"] == pytest.approx(2 / 5)
    assert s["rq"] == pytest.approx(1 / (1 + 1.0 + 0.5))


def test_merge_and_split_counted():
    truth = _boxes((20, 40), [(0, 0, 10, 10), (0, 10, 10, 20)])  # two touching squares
    merged = _boxes((20, 40), [(0, 0, 10, 20)])
    s = object_scores(merged, truth)
    assert s["merges"] == 1 and s["splits"] == 0 and s["ap_50"] == 0.0
    s = object_scores(truth, merged)  # the converse: one true object split in two
    assert s["splits"] == 1 and s["merges"] == 0


def test_classes_must_agree_to_match():
    truth = _boxes((20, 20), [(0, 0, 10, 10)])
    assert object_scores(truth, truth, {1: 1}, {1: 2})["ap_50"] == 0.0
    assert object_scores(truth, truth, {1: 2}, {1: 2})["ap_50"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        overlaps(np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_matching_is_sparse_for_many_objects():
    truth = np.arange(1, 200 * 200 + 1, dtype=np.int32).reshape(200, 200)  # 40000 objects
    ov = overlaps(truth, truth)
    assert len(ov.inter) == 40000  # only the overlapping pairs, no 40000 x 40000 matrix


def test_tally_means_skip_empty_images_and_pool_counts():
    tally = ObjectTally()
    truth = _boxes((30, 30), [(0, 0, 10, 10), (20, 20, 25, 25)])
    tally.add(truth, truth)  # perfect: ap 1
    tally.add(np.zeros_like(truth), truth)  # everything missed: ap 0
    empty = np.zeros((5, 5), np.int32)
    tally.add(empty, empty)  # no objects: skipped in the means
    s = tally.summary()
    assert s["images"] == 3 and s["n_true"] == 4 and s["n_pred"] == 2
    assert s["ap_50"] == pytest.approx(0.5) and s["map"] == pytest.approx(0.5)
    assert s["pooled_ap_50"] == pytest.approx(2 / 4)  # TP 2, FN 2
    assert s["recall_50"] == pytest.approx(0.5) and s["precision_50"] == 1.0
    assert s["count_error"] == pytest.approx((0 + 2 + 0) / 3)
    assert ObjectTally().summary() == {"images": 0}
