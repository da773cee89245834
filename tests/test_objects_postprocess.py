"""Seeded watershed post-processing of instance models' probabilities."""

import numpy as np
import pytest

from unetkit.config import ObjectConfig
from unetkit.data.targets import boundary_target
from unetkit.objects.labels import connected_objects, object_classes, renumber
from unetkit.objects.postprocess import separate_objects


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


def test_object_classes_and_renumber():
    labels = np.array([[5, 5, 0], [0, 9, 9]])
    assert (renumber(labels) == [[1, 1, 0], [0, 2, 2]]).all()
    mask = np.array([[1, 2, 0], [0, 2, 2]])
    assert object_classes(labels, mask, 3) == {5: 1, 9: 2}  # tie 1 vs 2 -> the lower
