"""Seeded watershed post-processing of instance models' probabilities."""

import numpy as np
import pytest

from unetkit.config import ObjectConfig
from unetkit.data.targets import boundary_target, object_distance
from unetkit.objects.labels import connected_objects, object_classes, renumber
from unetkit.objects.postprocess import regions_between, separate_objects


def _discs(centres, radius=8, size=(64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    labels = np.zeros(size, np.int32)
    for i, (y, x) in enumerate(centres, start=1):
        labels[((yy - y) ** 2 + (xx - x) ** 2 < radius**2) & (labels == 0)] = i
    return labels


def _perfect_probs(labels: np.ndarray, classes: np.ndarray | None = None, k: int = 2):
    mask = (labels > 0).astype(np.int64) if classes is None else classes
    target = boundary_target(mask, labels, k)
    return np.stack([(target == c).astype(np.float32) for c in range(k + 1)])


def test_touching_objects_are_separated_exactly():
    labels = _discs([(20, 20), (20, 35), (45, 30)])  # 1 and 2 touch
    assert connected_objects(labels > 0).max() == 2  # components alone merge them
    mask, found = separate_objects(_perfect_probs(labels))
    assert found.max() == 3
    assert (found == renumber(labels)).all()
    assert (mask == (labels > 0)).all()


def test_unseeded_regions_min_size_and_holes():
    labels = _discs([(20, 20)])
    probs = _perfect_probs(labels)
    probs[:, 50:52, 50:52] = np.array([0, 0, 1], np.float32)[:, None, None]  # boundary only
    probs[:, 40, 10] = np.array([0, 1, 0], np.float32)  # a 1-pixel object
    probs[:, 20, 20] = np.array([1, 0, 0], np.float32)  # a hole in the disc
    _, found = separate_objects(probs, ObjectConfig(min_size=0))
    assert found.max() == 3  # disc, unseeded 2x2 region, single pixel
    assert found[20, 20] == found[20, 21]  # hole filled
    _, found = separate_objects(probs, ObjectConfig(min_size=2, fill_holes=False))
    assert found.max() == 2 and found[40, 10] == 0 and found[20, 20] == 0


def test_object_class_is_the_likeliest_class_and_mask_agrees():
    labels = _discs([(20, 20), (40, 40)])
    classes = np.where(labels == 1, 1, np.where(labels == 2, 2, 0))
    probs = _perfect_probs(labels, classes, k=3)
    mask, found = separate_objects(probs)
    assert object_classes(found, mask, 3) == {1: 1, 2: 2}
    assert ((mask > 0) == (found > 0)).all()


def test_thresholds_are_honoured():
    labels = _discs([(30, 30)])
    probs = _perfect_probs(labels) * 0.6 + 0.4 / 3
    assert separate_objects(probs)[1].max() == 1
    assert separate_objects(probs, ObjectConfig(fg_threshold=0.9))[1].max() == 0  # 1 - p(bg) = 0.87
    with pytest.raises(ValueError, match="3 channels"):
        separate_objects(probs[:2])


def test_min_score_drops_the_objects_the_network_is_unsure_of():
    """An object's score is its mean 1 - p(background): the default 0.8 drops a faint one."""
    labels = _discs([(20, 20), (44, 44)])
    probs = _perfect_probs(labels)
    faint = labels == 2
    probs[:, faint] = probs[:, faint] * 0.7 + np.array([0.3, 0, 0], np.float32)[:, None]
    assert ObjectConfig().min_score == 0.8
    mask, found = separate_objects(probs)
    assert found.max() == 1 and (found == (labels == 1)).all() and not mask[faint].any()
    for min_score in (0.65, 0.0):
        assert separate_objects(probs, ObjectConfig(min_score=min_score))[1].max() == 2
    # the score is the mean over the object: an unsure patch in a sure object keeps it whole
    patchy = probs.copy()
    patchy[:, 17:23, 17:23] = np.array([0.4, 0.6, 0], np.float32)[:, None, None]
    _, found = separate_objects(patchy)
    assert found.max() == 1 and found[20, 20] == found[20, 14] == 1
    with pytest.raises(ValueError, match="min_score"):
        ObjectConfig(min_score=1.5)


def test_object_classes_and_renumber():
    labels = np.array([[5, 5, 0], [0, 9, 9]])
    assert (renumber(labels) == [[1, 1, 0], [0, 2, 2]]).all()
    mask = np.array([[1, 2, 0], [0, 2, 2]])
    assert object_classes(labels, mask, 3) == {5: 1, 9: 2}  # tie 1 vs 2 -> the lower


def test_renumber_orders_ids_by_their_first_pixel():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, (23, 31)).repeat(2, axis=1)  # runs, repeats, gaps in ids
    flat = labels.ravel()
    order = []  # ids by first appearance in raster order, written the slow way
    for value in flat:
        if value and value not in order:
            order.append(value)
    lut = {0: 0, **{int(v): i + 1 for i, v in enumerate(order)}}
    assert (renumber(labels) == np.vectorize(lut.get)(labels)).all()
    assert renumber(np.zeros((0, 4), np.int32)).shape == (0, 4)
    assert (renumber(np.full((2, 2), 7)) == 1).all()


def _cells(size=(48, 48), gap_at=None) -> tuple[np.ndarray, np.ndarray]:
    """Four cells between 2 px membranes (a cross); membrane probability 1 on the cross, with
    an optional 2 px gap in the vertical membrane at row ``gap_at``."""
    labels = np.zeros(size, np.int32)
    h, w = size
    labels[: h // 2, : w // 2], labels[: h // 2, w // 2 :] = 1, 2
    labels[h // 2 :, : w // 2], labels[h // 2 :, w // 2 :] = 3, 4
    membrane = np.zeros(size, np.float32)
    membrane[h // 2 - 1 : h // 2 + 1, :] = 1.0
    membrane[:, w // 2 - 1 : w // 2 + 1] = 1.0
    if gap_at is not None:
        membrane[gap_at : gap_at + 2, w // 2 - 1 : w // 2 + 1] = 0.4  # a weak, broken stretch
    return labels, membrane


def test_regions_between_assigns_every_pixel_and_closes_gaps():
    labels, membrane = _cells(gap_at=10)
    # connected components of the thresholded mask merge cells 1 and 2 through the gap
    assert connected_objects((membrane < 0.5).astype(np.uint8)).max() == 3
    found = regions_between(membrane, ObjectConfig(seed_threshold=0.7))
    assert found.min() == 1 and found.max() == 4  # every pixel in one of four regions
    off = membrane < 0.5  # away from the membranes the regions are the cells, exactly
    assert (found[off & (membrane == 0)] == labels[off & (membrane == 0)]).all()
    # at a seed threshold below the gap's probability, the gap joins the two seeds again
    assert regions_between(membrane, ObjectConfig(seed_threshold=0.5)).max() == 3


def test_regions_between_drops_small_seeds_and_handles_no_seed():
    labels, membrane = _cells()
    membrane[5:7, 5:7] = 0.0  # already a seed pixel of cell 1: no change
    membrane[8:12, 8:12] = 1.0
    membrane[9:11, 9:11] = 0.0  # a 4-pixel island of "cell" inside a blob of membrane
    assert regions_between(membrane, ObjectConfig(min_size=1)).max() == 5
    assert regions_between(membrane, ObjectConfig(min_size=5)).max() == 4
    none = regions_between(np.ones((8, 8), np.float32))
    assert none.shape == (8, 8) and not none.any()
    with pytest.raises(ValueError, match="must be"):
        regions_between(np.ones((2, 8, 8), np.float32))


def _perfect_distance_maps(labels: np.ndarray) -> np.ndarray:
    """The distance head's maps of ``labels``: p(background), p(object), the distance."""
    fg = (labels > 0).astype(np.float32)
    return np.stack([1 - fg, fg, object_distance(labels)])


def test_distance_head_separates_touching_objects_exactly():
    labels = _discs([(20, 20), (20, 35), (45, 30)])  # 1 and 2 touch
    cfg = ObjectConfig(head="distance", min_size=0)
    mask, found = separate_objects(_perfect_distance_maps(labels), cfg)
    assert found.max() == 3 and (found == renumber(labels)).all()
    assert (mask == (labels > 0)).all()
    # a small object against a large one: each peaks at 1, so each gets its seed
    yy, xx = np.mgrid[:64, :64]
    pair = np.where((yy - 30) ** 2 + (xx - 24) ** 2 < 144, 1, 0).astype(np.int32)
    pair[((yy - 30) ** 2 + (xx - 39) ** 2 < 16) & (pair == 0)] = 2
    assert connected_objects(pair > 0).max() == 1
    _, found = separate_objects(_perfect_distance_maps(pair), cfg)
    assert found.max() == 2 and ((found > 0) == (pair > 0)).all()
    # the pixels on the line of contact may go to either side, nothing more
    small = (found == 2) & (pair == 2)
    assert small.sum() / ((found == 2) | (pair == 2)).sum() > 0.85
    # the boundary head's post-processing on the same maps merges the touching pair: the
    # head decides how the last channel is read
    _, merged = separate_objects(_perfect_distance_maps(labels), ObjectConfig(min_size=0))
    assert merged.max() < 3


def test_distance_head_thresholds_and_classes():
    labels = _discs([(20, 20), (20, 35), (45, 30)])
    maps = _perfect_distance_maps(labels)
    # no seed anywhere (threshold seeds, seed_h 0, above every distance; h-maxima deeper than
    # the map's range): each connected region is one object
    maps_low = maps.copy()
    maps_low[2] *= 0.9
    for cfg in (
        ObjectConfig(head="distance", seed_h=0, seed_threshold=0.999, min_size=0),
        ObjectConfig(head="distance", seed_h=0.95, min_size=0),
    ):
        _, found = separate_objects(maps_low, cfg)
        assert found.max() == connected_objects(labels > 0).max() == 2
    # threshold seeds without smoothing still separate a perfect map exactly
    cfg = ObjectConfig(head="distance", seed_h=0, distance_sigma=0, min_size=0)
    assert (separate_objects(maps, cfg)[1] == renumber(labels)).all()
    # two object classes: each object takes the likelier class over its pixels
    classes = np.where(labels == 3, 2, (labels > 0).astype(np.int64))
    probs = np.stack([(classes == c).astype(np.float32) for c in range(3)] + [maps[2]])
    mask, found = separate_objects(probs, ObjectConfig(head="distance", min_size=0))
    assert found.max() == 3 and (mask == classes).all()


def test_distance_head_seeds_a_flat_noisy_map_once_per_object():
    """A trained distance map is flatter and noisier than the target (a 15-minute DSB 2018
    model: peaks near 0.5, pixel noise about 0.1 inside each nucleus): seeds above a fixed
    threshold cut each object into the bumps above it; h-maxima of the smoothed map give one
    seed per object (``distance_sigma``, ``seed_h``)."""
    from unetkit.objects.metrics import ObjectTally

    labels = _discs([(20, 20), (20, 35), (45, 30)], radius=9)  # 1 and 2 touch
    maps = _perfect_distance_maps(labels)
    noise = np.random.default_rng(0).normal(0, 0.08, labels.shape).astype(np.float32)
    maps[2] = np.where(labels > 0, 0.2 + 0.35 * maps[2] + noise, 0).astype(np.float32)
    base = {"head": "distance", "min_size": 0, "min_score": 0.0}
    _, found = separate_objects(maps, ObjectConfig(**base))
    tally = ObjectTally()
    tally.add(found, labels)
    summary = tally.summary()
    assert found.max() == 3 and summary["ap_75"] == 1.0 and summary["splits"] == 0
    # the threshold seeds on the same map: fragments
    _, found = separate_objects(maps, ObjectConfig(**base, seed_h=0, distance_sigma=0))
    assert found.max() > 10


def test_distance_head_settings_are_validated():
    for bad in ({"distance_sigma": -1.0}, {"distance_sigma": float("nan")},
                {"distance_sigma": float("inf")}, {"seed_h": 1.0}, {"seed_h": -0.1}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            ObjectConfig(head="distance", **bad)
    assert ObjectConfig().distance_sigma == 1.0 and ObjectConfig().seed_h == 0.15
