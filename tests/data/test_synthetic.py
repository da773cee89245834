"""Synthetic labelme data: files, determinism, annotation/image agreement, class appearance."""

from __future__ import annotations

import json

import numpy as np

from unetkit.data.labelme import load_image, load_labelme
from unetkit.data.rasterize import rasterize
from unetkit.data.synthetic import make_image_and_mask, make_labelme_folder


def test_folder_layout(labelme_folder):
    names = sorted(p.name for p in labelme_folder.iterdir())
    assert "labels.txt" in names and len([n for n in names if n.endswith(".json")]) == 6
    assert (labelme_folder / "labels.txt").read_text().split() == [
        "__ignore__", "_background_", "cell", "nucleus",
    ]  # fmt: skip
    kinds = set()
    for i in range(6):
        doc = json.loads((labelme_folder / f"img_{i:03d}.json").read_text())
        embedded = i % 3 == 0
        assert (doc["imageData"] is not None) == embedded
        assert (labelme_folder / f"img_{i:03d}.png").exists() != embedded
        assert doc["imageHeight"] == 64 and doc["imageWidth"] == 80
        assert doc["imagePath"] == f"img_{i:03d}.png"
        kinds |= {(s["label"], s["shape_type"]) for s in doc["shapes"]}
    assert {("cell", "polygon"), ("nucleus", "polygon"), ("nucleus", "circle")} <= kinds


def test_deterministic(tmp_path):
    a = make_labelme_folder(tmp_path / "a", n_images=2, size=(40, 40), seed=5)
    b = make_labelme_folder(tmp_path / "b", n_images=2, size=(40, 40), seed=5)
    c = make_labelme_folder(tmp_path / "c", n_images=2, size=(40, 40), seed=6)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "img_000.json").read_bytes() != (c / "img_000.json").read_bytes()


def test_annotation_matches_rendered_image(labelme_folder):
    doc = load_labelme(labelme_folder / "img_001.json")
    image = load_image(doc, labelme_folder)
    mask = rasterize(doc.shapes, image.shape[:2], {"cell": 1, "nucleus": 2})
    grey = image.astype(float) @ [0.299, 0.587, 0.114]
    medians = [np.median(grey[mask == c]) for c in range(3)]
    assert medians[2] < medians[1] < medians[0]  # nucleus darkest, background brightest


def _best_two_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Best pixel accuracy of 'dark = 2, middle = 1, bright = 0' over all threshold pairs."""
    hist = np.stack([np.bincount(values[labels == c], minlength=256) for c in range(3)])
    below = np.cumsum(hist, axis=1)  # below[c, t]: pixels of class c with value <= t
    best = 0
    for t1 in range(256):
        t2 = np.arange(t1, 256)
        correct = below[2, t1] + (below[1, t2] - below[1, t1]) + (below[0, 255] - below[0, t2])
        best = max(best, correct.max())
    return best / labels.size


def test_large_image_classes_learnable_but_not_thresholdable():
    image, mask = make_image_and_mask((300, 400), seed=1)
    assert image.shape == (300, 400, 3) and image.dtype == np.uint8
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 1, 2}
    share = np.bincount(mask.ravel()) / mask.size
    assert 0.3 < share[0] < 0.7 and share[1] > 0.2 and 0.03 < share[2] < 0.2
    grey = np.rint(image.astype(float) @ [0.299, 0.587, 0.114]).astype(int)
    for channel in (grey, image[..., 0], image[..., 1], image[..., 2]):
        assert _best_two_threshold_accuracy(channel.ravel(), mask.ravel()) < 0.96
    same = make_image_and_mask((300, 400), seed=1)
    assert np.array_equal(same[0], image) and np.array_equal(same[1], mask)
