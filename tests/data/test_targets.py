"""Instance training targets: object edges, the boundary class, the weight map from instances."""

import numpy as np
import pytest

from unetkit.data.targets import (
    boundary_target,
    instance_weight_map,
    object_distance,
    object_edges,
    two_nearest_distances,
)
from unetkit.errors import UnetkitError


def _two_touching() -> np.ndarray:
    labels = np.zeros((7, 10), np.int32)
    labels[1:6, 1:5] = 1
    labels[1:6, 5:9] = 2  # touches object 1 along column 4 | 5
    return labels


def test_edges_are_the_object_pixels_next_to_another_id():
    labels = _two_touching()
    edges = object_edges(labels)
    interior = (labels > 0) & ~edges
    # object 1 (rows 1-5, cols 1-4): interior rows 2-4, cols 2-3; object 2: rows 2-4, cols 6-7
    expected = np.zeros_like(edges)
    expected[2:5, 2:4] = True
    expected[2:5, 6:8] = True
    assert (interior == expected).all()
    assert not edges[labels == 0].any()


def test_the_image_border_is_not_an_edge():
    labels = np.ones((5, 5), np.int32)  # one object filling the image (cut by every border)
    assert not object_edges(labels).any()


def test_wider_boundary():
    labels = np.zeros((11, 11), np.int32)
    labels[1:10, 1:10] = 1
    edges = object_edges(labels, width=2)
    assert edges.sum() == 81 - 25  # a 9x9 square keeps its central 5x5
    with pytest.raises(UnetkitError, match="width"):
        object_edges(labels, width=0)


def test_a_wide_boundary_narrows_on_small_objects_to_keep_an_interior():
    """A 2 px edge would leave a 5x5 object 1 interior pixel (< a quarter): it gets 1 px."""
    labels = np.zeros((13, 20), np.int32)
    labels[1:10, 1:10] = 1  # 9x9: keeps 5x5 = 31 % at 2 px
    labels[1:6, 10:15] = 2  # 5x5, touching object 1: would keep 1 px of 25
    labels[7:12, 14:19] = 3  # 5x5 alone
    edges = object_edges(labels, width=2)
    interior = (labels > 0) & ~edges
    assert interior[labels == 1].sum() == 25
    assert interior[labels == 2].sum() == interior[labels == 3].sum() == 9
    assert (interior[2:5, 11:14]).all() and (interior[8:11, 15:18]).all()
    wide = object_edges(labels, width=3)  # 9x9 keeps 3x3 = 11 % at 3 px -> 2 px
    assert (((labels > 0) & ~wide)[labels == 1]).sum() == 25


def test_a_boundary_fraction_leaves_each_object_its_core():
    """fraction 0.5: interior = pixels at least half the inner radius from the 1 px edge, so
    two touching 21x21 squares keep 11x11 cores 10 px apart (a 2 px edge: 17x17, 4 px)."""
    labels = np.zeros((25, 48), np.int32)
    labels[2:23, 2:23] = 1
    labels[2:23, 23:44] = 2  # touches object 1 along columns 22 | 23
    labels[10:15, 45:48] = 3  # small, cut by the image border
    plain = object_edges(labels, width=2)
    core = object_edges(labels, width=2, fraction=0.5)
    assert (core | plain).sum() == core.sum()  # the fraction only widens the edge
    inner = (labels > 0) & ~core
    # inner radius of a 21x21 square from its 1 px edge: 10 px (centre 12, 12 to row 2);
    # interior where the distance is >= 5, i.e. rows / columns 7..17 of object 1 (11x11)
    rows, cols = np.nonzero(inner & (labels == 1))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 17, 7, 17)
    rows2, cols2 = np.nonzero(inner & (labels == 2))
    assert cols2.min() - cols.max() == 11  # 10 px of boundary between the cores
    assert inner[12, 12] and inner[12, 33]  # each object's deepest pixel stays a seed
    assert inner[labels == 3].any()  # a small object keeps one too
    assert (object_edges(labels, width=2, fraction=0.0) == plain).all()
    for bad in (-0.1, 1.0):
        with pytest.raises(UnetkitError, match="fraction"):
            object_edges(labels, fraction=bad)


def test_boundary_target_sets_class_k_and_keeps_ignore():
    labels = _two_touching()
    mask = (labels > 0).astype(np.int64)
    mask[0, 0] = 255
    target = boundary_target(mask, labels, boundary_class=2)
    assert target[0, 0] == 255
    assert set(np.unique(target)) == {0, 1, 2, 255}
    assert (target[labels == 0][1:] == 0).all()
    assert target[3, 4] == 2 and target[3, 5] == 2  # the touching columns are boundary
    assert target[3, 3] == 1 and target[3, 6] == 1
    with pytest.raises(UnetkitError, match="instances are"):
        boundary_target(mask[:, :5], labels, 2)


def test_two_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 24), np.int32)
    for i in range(1, 5):
        y, x = rng.integers(0, 18), rng.integers(0, 22)
        labels[y : y + 2, x : x + 2] = i
    count = int(labels.max())
    d1, d2 = two_nearest_distances(labels, count, reach=100.0)
    yy, xx = np.mgrid[:20, :24]
    per_object = []
    for i in range(1, count + 1):
        pts = np.argwhere(labels == i)
        if len(pts) == 0:
            continue
        dist = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
        per_object.append(dist.min(-1))
    ordered = np.sort(np.stack(per_object), axis=0)
    assert np.allclose(d1, ordered[0]) and np.allclose(d2, ordered[1])


def test_weight_map_is_high_between_touching_objects_only():
    labels = _two_touching()
    lone = np.zeros((7, 30), np.int32)
    lone[:, :10] = labels
    lone[2:5, 25:28] = 3  # far away
    mask = (lone > 0).astype(np.int64)
    target = boundary_target(mask, lone, 2)
    weights = instance_weight_map(target, lone, 2, w0=10.0, sigma=5.0)
    # a boundary pixel where 1 touches 2: d1 = 0, d2 = 1 -> 1 + 10 exp(-1/50)
    assert weights[3, 4] == pytest.approx(1 + 10 * np.exp(-1 / 50), rel=1e-5)
    assert weights[3, 2] == 1.0  # interior
    # object 3's own boundary: d2 is the distance to object 2 (>= 16 px): small term
    assert weights[2, 25] < 1.1
    no_border = instance_weight_map(target, lone, 2, w0=0.0)
    assert (no_border == 1).all()


def _discs(centres, radii, size=(40, 60)) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    labels = np.zeros(size, np.int32)
    for i, ((y, x), r) in enumerate(zip(centres, radii), start=1):
        labels[((yy - y) ** 2 + (xx - x) ** 2 < r**2) & (labels == 0)] = i
    return labels


def test_object_distance_is_each_objects_edt_over_its_maximum():
    labels = _discs([(20, 20), (20, 33)], (8, 6))  # a large and a small disc, touching
    assert ((labels[:, 1:] == 2) & (labels[:, :-1] == 1)).any()  # they share an edge
    dist = object_distance(labels)
    assert dist.dtype == np.float32 and dist.shape == labels.shape
    assert (dist[labels == 0] == 0).all() and (dist[labels > 0] > 0).all()
    for i in (1, 2):  # every object peaks at 1, whatever its size
        assert dist[labels == i].max() == pytest.approx(1.0)
    # the large disc (radius 8): its centre pixel is 8 px from outside, the edge 1 px
    assert dist[20, 20] == pytest.approx(1.0)
    assert dist[20, 13] == pytest.approx(1 / 8)
    # the valley: where they touch, both sides are 1 px from the other object
    touch = np.nonzero((labels[20, 1:] == 2) & (labels[20, :-1] == 1))[0][0]
    assert dist[20, touch] == pytest.approx(1 / 8)  # disc 1's last pixel
    assert dist[20, touch + 1] == pytest.approx(1 / dist_max_edt(labels == 2))


def dist_max_edt(inside: np.ndarray) -> float:
    from scipy import ndimage

    return float(ndimage.distance_transform_edt(inside).max())


def test_object_distance_the_image_border_is_not_an_edge():
    labels = np.zeros((5, 9), np.int32)
    labels[:, :4] = 1  # cut by the top, bottom and left borders
    labels[:, 4:] = 2
    dist = object_distance(labels)
    # object 1's farthest pixels from object 2 are on the left border: distance 4 px, 1.0
    assert (dist[:, 0] == 1.0).all() and dist[:, 3] == pytest.approx(0.25)
    assert (object_distance(np.ones((4, 4), np.int32)) == 1).all()  # no edge at all
    assert (object_distance(np.zeros((4, 4), np.int32)) == 0).all()
