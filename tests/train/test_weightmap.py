"""The paper's weight map against values computed by hand."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import ndimage

from unetkit.errors import UnetkitError
from unetkit.train.weightmap import border_weight_map

IGNORE = 255


def _border(total: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-(total**2) / (2 * sigma**2))


def test_weight_map_two_objects_by_hand():
    # objects at columns 0-1 and 5; d1 + d2 per gap pixel:
    # col 2: 1 + 3 = 4, col 3: 2 + 2 = 4, col 4: 3 + 1 = 4, col 6: 1 + 5 = 6, col 7: 2 + 6 = 8
    mask = np.array([[1, 1, 0, 0, 0, 1, 0, 0]])
    gap = [_border(4), _border(4), _border(4), 0, _border(6), _border(8)]
    expected = 1 + np.array([0, 0, *gap[:3], 0, *gap[4:]])
    got = border_weight_map(mask, class_weights=None)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    # The same picture with cells = class 0 and the gaps = class 1 (ISBI 2012 convention).
    np.testing.assert_allclose(border_weight_map(1 - mask, objects=0, class_weights=None), got)


def test_weight_map_balanced_classes_and_ignore():
    # valid pixels: 3 of class 1, 4 of class 0 -> w_c = N / (K n_c) = 7/8 (class 0), 7/6 (class 1)
    mask = np.array([[1, 1, 0, 0, 0, 1, 0, IGNORE]])
    got = border_weight_map(mask)
    wc0, wc1 = 7 / 8, 7 / 6
    expected = [wc1, wc1, wc0 + _border(4), wc0 + _border(4), wc0 + _border(4), wc1]
    expected += [wc0 + _border(6), 0.0]
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    valid = mask != IGNORE
    assert border_weight_map(mask, w0=0)[valid].mean() == pytest.approx(1.0)


def test_weight_map_one_object_has_no_border_term_and_classes_stay_apart():
    one = np.array([[0, 1, 1, 0, 0]])
    np.testing.assert_allclose(border_weight_map(one, class_weights=None), np.ones((1, 5)))
    # touching objects of different classes are two objects: col 4 has d1 = 1, d2 = 3
    two = np.array([[1, 1, 2, 2, 0]])
    got = border_weight_map(two, class_weights=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(got[0], [2, 2, 3, 3, 1 + _border(4)], rtol=1e-6)


def test_weight_map_equals_brute_force_on_random_objects():
    rng = np.random.default_rng(0)
    mask = (ndimage.uniform_filter(rng.random((64, 64)), 5) > 0.55).astype(np.int64)
    labels, n = ndimage.label(mask)
    assert n >= 5
    # full-image distance to every object, sorted: rows 0 and 1 are d1 and d2
    dist = np.sort([ndimage.distance_transform_edt(labels != i) for i in range(1, n + 1)], 0)
    border = 10 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * 2.0**2))
    expected = 1 + np.where(labels == 0, border, 0)
    got = border_weight_map(mask, sigma=2.0, class_weights=None)  # small sigma: windows matter
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_weight_map_is_fast_for_512_with_100_objects():
    yy, xx = np.mgrid[:512, :512]
    mask = np.zeros((512, 512), np.int64)
    for cy in range(26, 512, 51):
        for cx in range(26, 512, 51):
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 18**2] = 1
    assert ndimage.label(mask)[1] == 100
    start = time.perf_counter()
    weights = border_weight_map(mask, class_weights=None)
    assert time.perf_counter() - start < 1.0
    # neighbours leave a 16-pixel gap (row 26: columns 44..59), so the closest gap pixel has
    # d1 + d2 = 1 + 16
    assert mask[26, 43] == 1 and mask[26, 44:60].sum() == 0 and mask[26, 60] == 1
    assert weights.max() == pytest.approx(1 + _border(17), rel=1e-6)


def test_weight_map_rejects_bad_arguments():
    with pytest.raises(UnetkitError, match="objects"):
        border_weight_map(np.zeros((3, 3), int), objects="cells")
    with pytest.raises(UnetkitError, match="sigma"):
        border_weight_map(np.zeros((3, 3), int), sigma=0)
    with pytest.raises(UnetkitError, match="has class 4"):
        border_weight_map(np.full((3, 3), 4), class_weights=np.ones(2))
