"""The rays head's post-processing: star-convex polygons, NMS, labels (``objects.stars``)."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.config import ObjectConfig
from unetkit.data.rays import object_rays
from unetkit.data.targets import object_distance
from unetkit.objects.labels import renumber
from unetkit.objects.postprocess import separate_objects
from unetkit.objects.stars import star_objects


def _touching_disks() -> np.ndarray:
    """Two discs of radius 9 whose centres are 16 px apart: they touch along a chord."""
    yy, xx = np.mgrid[:40, :60]
    labels = np.zeros((40, 60), np.int32)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 81] = 1
    labels[((yy - 20) ** 2 + (xx - 36) ** 2 <= 81) & (labels == 0)] = 2
    return labels


def _maps(labels: np.ndarray, n_rays: int = 32) -> np.ndarray:
    """A perfect rays head's outputs: p(background), p(object), distance, rays."""
    fg = (labels > 0).astype(np.float32)
    return np.concatenate([np.stack([1 - fg, fg, object_distance(labels)]),
                           object_rays(labels, n_rays)])  # fmt: skip


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_two_touching_disks_are_two_polygons():
    labels = _touching_disks()
    found = star_objects(object_distance(labels), object_rays(labels, 32))
    assert len(np.unique(found)) == 3  # background and two objects
    for k in (1, 2):
        best = np.bincount(found[labels == k]).argmax()
        assert best > 0 and _iou(found == best, labels == k) > 0.9


def test_nms_keeps_the_best_and_drops_polygons_that_overlap_it():
    """Two candidate squares (rays 4.5 of 8 at right angles, diagonals 4.5 sqrt 2) 4 px
    apart overlap by about half their area: one survives at 0.4, both at 0.6; where both are
    drawn the more probable one covers the pixels they share."""
    n = 8
    half = 4.5 / np.maximum(np.abs(np.sin(2 * np.pi * np.arange(n) / n)),
                            np.abs(np.cos(2 * np.pi * np.arange(n) / n)))  # fmt: skip
    prob = np.zeros((20, 30), np.float32)
    rays = np.zeros((n, 20, 30), np.float32)
    prob[10, 10], prob[10, 14] = 0.9, 0.8
    rays[:, 10, 10] = rays[:, 10, 14] = half
    one = star_objects(prob, rays, 0.5, 0.4)
    assert set(np.unique(one)) == {0, 1} and (one > 0).sum() == 81  # the 9 x 9 square at 10
    assert one[10, 6] and not one[10, 15]
    two = star_objects(prob, rays, 0.5, 0.6)
    assert len(np.unique(two)) == 3
    assert two[10, 12] == two[10, 10] != two[10, 16]  # the shared pixels: the better one's
    assert star_objects(prob, rays, 0.85, 0.4).max() == 1  # only one candidate above 0.85
    assert star_objects(prob, rays, 0.95, 0.4).max() == 0


def test_separate_objects_with_perfect_rays_maps():
    rng = np.random.default_rng(3)
    labels = np.zeros((64, 80), np.int32)
    yy, xx = np.mgrid[:64, :80]
    for k, (cy, cx) in enumerate(((16, 16), (16, 30), (30, 22), (45, 55), (45, 67)), start=1):
        r = rng.uniform(6, 8)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
    cfg = ObjectConfig(head="rays", min_size=0)
    mask, found = separate_objects(_maps(labels), cfg)
    truth = renumber(labels)
    # touching discs apart, each itself but for a pixel or two where a neighbour's polygon
    # (32 straight edges) reaches over the curved line where they touch
    assert found.max() == 5 and (found != truth).sum() <= 4
    assert (mask == (labels > 0)).all()
    # StarDist's polygons alone are close, but miss more of each disc's rim
    _, polygons = separate_objects(_maps(labels), cfg.replace(rays_to_foreground=False))
    assert polygons.max() == 5 and 4 < (polygons != truth).sum() < 0.05 * labels.size


def test_separate_objects_rays_head_channels_and_classes():
    labels = _touching_disks()
    maps = _maps(labels, 16)
    with pytest.raises(ValueError, match="rays head"):
        separate_objects(maps, ObjectConfig(head="rays"))  # 32 rays expected, 16 given
    # three classes: the right disc is more probably class 2
    fg = (labels > 0).astype(np.float32)
    right = (labels == 2).astype(np.float32)
    classes = np.stack([1 - fg, fg * (1 - 0.8 * right), 0.8 * right * fg])
    probs = np.concatenate([classes, maps[2:]])
    mask, found = separate_objects(probs, ObjectConfig(head="rays", n_rays=16, min_size=0))
    assert found.max() == 2 and set(np.unique(mask)) == {0, 1, 2}
    for k in (1, 2):  # each object all of one class (mask and objects agree)
        assert len(np.unique(mask[found == k])) == 1
        assert np.bincount(mask[labels == k]).argmax() == k


def test_thresholds_are_chosen_on_images_where_the_defaults_fail():
    """A map whose object probability peaks at 0.45: nothing at the default 0.5; the grid's
    best, nearest the configured thresholds among equals, finds both discs."""
    from unetkit.objects.thresholds import NMS_GRID, PROB_GRID, SCORE_GRID, choose_star_thresholds

    labels = _touching_disks()
    maps = _maps(labels)
    maps[2] *= 0.45
    cfg = ObjectConfig(head="rays", min_size=0)
    assert separate_objects(maps, cfg)[1].max() == 0
    chosen, table = choose_star_thresholds(iter([(maps, labels)]), cfg)
    assert set(table) == {(p, n, m) for p in PROB_GRID for n in NMS_GRID for m in SCORE_GRID}
    assert (chosen.prob_thresh, chosen.nms_thresh, chosen.min_score) == (0.4, 0.4, 0.8)
    assert table[(0.4, 0.4, 0.8)]["ap_50"] == 1.0 and table[(0.5, 0.4, 0.8)]["ap_50"] == 0.0
    assert separate_objects(maps, chosen)[1].max() == 2


def test_min_score_is_chosen_too_when_the_foreground_is_unsure():
    """Objects whose foreground probability is 0.7 fall under the configured min_score 0.8:
    the search keeps them with min_score 0."""
    from unetkit.objects.thresholds import choose_star_thresholds

    labels = _touching_disks()
    maps = _maps(labels)
    inside = labels > 0
    maps[0][inside], maps[1][inside] = 0.3, 0.7
    cfg = ObjectConfig(head="rays", min_size=0)
    assert separate_objects(maps, cfg)[1].max() == 0
    chosen, table = choose_star_thresholds(iter([(maps, labels)]), cfg)
    assert chosen.min_score == 0.0 and table[(0.5, 0.4, 0.8)]["ap_50"] == 0.0
    assert separate_objects(maps, chosen)[1].max() == 2
