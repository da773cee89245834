"""Confusion-matrix metrics, adapted Rand error and pixel error against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from unetkit.errors import UnetkitError
from unetkit.metrics import (
    ConfusionMatrix,
    adapted_rand_error,
    confusion_from_arrays,
    membrane_rand_error,
    pixel_error,
)

IGNORE = 255
# 7 pixels; pixel 5 has an ignored target, pixel 6 an out-of-range prediction: both skipped.
TARGET = np.array([0, 0, 1, 1, 2, IGNORE, 2])
PRED = np.array([0, 1, 1, 1, 0, 2, 5])
MATRIX = [[1, 1, 0], [0, 2, 0], [1, 0, 0]]  # rows = ground truth, columns = prediction


def test_matrix_and_metrics_by_hand():
    cm = ConfusionMatrix(3, ignore_index=IGNORE)
    cm.update(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == MATRIX
    out = cm.compute(["bg", "a", "b"])
    # class bg: tp 1, fp 1, fn 1; class a: tp 2, fp 1, fn 0; class b: tp 0, fp 0, fn 1
    assert out["per_class"]["bg"] == pytest.approx(
        {"iou": 1 / 3, "dice": 1 / 2, "precision": 1 / 2, "recall": 1 / 2, "support": 2}
    )
    assert out["per_class"]["a"] == pytest.approx(
        {"iou": 2 / 3, "dice": 4 / 5, "precision": 2 / 3, "recall": 1.0, "support": 2}
    )
    assert out["per_class"]["b"] == {
        "iou": 0.0,
        "dice": 0.0,
        "precision": None,  # never predicted
        "recall": 0.0,
        "support": 1,
    }
    assert out["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert out["mean_iou_foreground"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["mean_dice"] == pytest.approx((4 / 5 + 0) / 2)
    assert out["pixel_accuracy"] == pytest.approx(3 / 5)
    assert out["pixel_error"] == pytest.approx(2 / 5)
    assert out["pixels"] == 5


def test_class_absent_from_gt_and_pred_is_left_out_of_means():
    out = confusion_from_arrays(PRED, TARGET, 4).compute()
    assert out["per_class"]["3"] == {
        "iou": None,
        "dice": None,
        "precision": None,
        "recall": None,
        "support": 0,
    }
    assert out["mean_iou"] == pytest.approx(1 / 3)
    assert out["mean_dice"] == pytest.approx(0.4)


def test_updates_accumulate_numpy_and_torch_and_reset():
    cm = ConfusionMatrix(3)
    cm.update(PRED.reshape(1, 7), TARGET.reshape(1, 7))  # numpy, (B, N)
    cm.update(torch.from_numpy(PRED[:5]).int(), torch.from_numpy(TARGET[:5]))
    assert cm.matrix.tolist() == (2 * np.array(MATRIX)).tolist()
    cm.reset()
    assert cm.matrix.sum().item() == 0
    assert cm.compute()["pixel_accuracy"] is None and cm.compute()["mean_iou"] is None


def test_single_class_and_ignore_index_inside_range():
    one = confusion_from_arrays(np.zeros(4, int), np.array([0, 0, 0, IGNORE]), 1).compute()
    assert one["mean_dice"] == 1.0 and one["pixels"] == 3
    # ignore_index 0 drops every pixel whose target is 0
    cm = confusion_from_arrays(PRED[:5], TARGET[:5], 3, ignore_index=0)
    assert cm.matrix.tolist() == [[0, 0, 0], [0, 2, 0], [1, 0, 0]]


def test_errors():
    cm = ConfusionMatrix(2)
    with pytest.raises(UnetkitError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(UnetkitError, match="3 class names"):
        cm.compute(["a", "b", "c"])


def test_reduce_is_noop_without_and_sums_with_a_process_group(tmp_path):
    cm = confusion_from_arrays(PRED, TARGET, 3)
    cm.reduce_from_all_processes()
    assert cm.matrix.tolist() == MATRIX
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cm.reduce_from_all_processes()
    finally:
        dist.destroy_process_group()
    assert cm.matrix.tolist() == MATRIX


def test_adapted_rand_identical_and_relabelled_is_zero():
    gt = np.array([[1, 1, 2], [0, 3, 3]])
    assert adapted_rand_error(gt, gt) == 0.0
    assert adapted_rand_error(gt * 7 + 100, gt) == 0.0  # ids do not matter


def test_adapted_rand_merge_and_split_by_hand():
    # merge: two gt segments of 2 pixels, one predicted segment of 4.
    # sum n_ij^2 = 4 + 4 = 8, sum a_i^2 = 8, sum b_j^2 = 16 -> 1 - 2*8 / (8 + 16) = 1/3
    gt = np.array([[1, 1], [2, 2]])
    assert adapted_rand_error(np.full((2, 2), 9), gt) == pytest.approx(1 / 3)
    # split: the transposed case, sum a^2 = 16, sum b^2 = 8 -> also 1/3
    assert adapted_rand_error(gt, np.full((2, 2), 9)) == pytest.approx(1 / 3)


def test_adapted_rand_contingency_by_hand_excludes_gt_zero():
    gt = np.array([1, 1, 1, 2, 2, 0])
    pred = np.array([1, 1, 2, 2, 2, 3])  # last pixel: gt 0, not scored
    # table over scored pixels: (1,1)=2, (1,2)=1, (2,2)=2 -> sum n^2 = 9
    # gt sizes [3, 2] -> 13; pred sizes [2, 3] -> 13; error = 1 - 18 / 26 = 4/13
    assert adapted_rand_error(pred, gt) == pytest.approx(4 / 13)
    assert adapted_rand_error(pred, np.zeros(6, int)) == 0.0
    with pytest.raises(UnetkitError, match="shape"):
        adapted_rand_error(pred, gt[:5])


def _vertical_membrane(columns: list[int], size: int = 5) -> np.ndarray:
    mask = np.zeros((size, size), np.int64)
    mask[:, columns] = 1
    return mask


def test_membrane_rand_error_by_hand():
    gt = _vertical_membrane([2])  # two cells of 10 pixels
    assert membrane_rand_error(gt, gt) == 0.0
    # no predicted membrane: one cell of 20 scored pixels -> 1 - 2*200 / (200 + 400) = 1/3
    assert membrane_rand_error(np.zeros_like(gt), gt) == pytest.approx(1 / 3)
    # thick predicted membrane (columns 1-3): pred cells = column 0 and column 4 (5 px each),
    # pred label 0 covers columns 1 and 3 of the scored pixels (10 px, one segment).
    # n = {(A,left)=5, (A,0)=5, (B,0)=5, (B,right)=5}: sum n^2 = 100; a: 200; b: 25+25+100
    # -> 1 - 200 / 350 = 3/7
    assert membrane_rand_error(_vertical_membrane([1, 2, 3]), gt) == pytest.approx(3 / 7)


def test_membrane_cells_are_four_connected_and_ignore_is_skipped():
    # a diagonal 1-pixel membrane separates two 3-pixel cells under 4-connectivity
    gt = np.eye(3, dtype=np.int64)
    # prediction without membrane: one segment over the 6 scored pixels -> 1 - 36 / (18 + 36)
    assert membrane_rand_error(np.zeros_like(gt), gt) == pytest.approx(1 / 3)
    gt_ignored = gt.copy()
    gt_ignored[2, 1] = IGNORE  # still two cells (of 3 and 2 pixels): 1 - 2*13 / (13 + 25)
    assert membrane_rand_error(np.zeros_like(gt), gt_ignored) == pytest.approx(1 - 26 / 38)


def test_pixel_error():
    assert pixel_error(np.array([0, 0, 1, 1]), np.array([0, 1, 1, IGNORE])) == pytest.approx(1 / 3)
    assert pixel_error(np.zeros(2, int), np.full(2, IGNORE)) == 0.0
