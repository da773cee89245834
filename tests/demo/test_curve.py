"""The demo's learning curve (``unetkit.demo.curve``): nested subsets, the scores, Otsu's
threshold, and the curve of real (tiny) runs with a stand-in trainer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from unetkit.demo.curve import (
    foreground_scores,
    learning_curve,
    nested_subsets,
    otsu_foreground,
    parse_sizes,
)


def test_parse_sizes():
    assert parse_sizes("8,2, 4,2") == (2, 4, 8)
    assert parse_sizes("") == () and parse_sizes(" , ") == ()
    for bad in ("0", "2,x", "-1", "1.5"):
        with pytest.raises(ValueError, match="whole numbers >= 1"):
            parse_sizes(bad)


def test_subsets_are_nested_seeded_and_below_the_split():
    stems = [f"img_{i:03d}" for i in range(18)]
    subsets = nested_subsets(stems, (2, 4, 8, 18, 30), seed=0)
    assert sorted(subsets) == [2, 4, 8]  # the whole split is the demo's own run
    assert [len(s) for s in subsets.values()] == [2, 4, 8]
    assert set(subsets[2]) < set(subsets[4]) < set(subsets[8]) < set(stems)
    assert nested_subsets(list(reversed(stems)), (4,), seed=0) == {4: subsets[4]}
    assert nested_subsets(stems, (4,), seed=1) != {4: subsets[4]}  # the seed picks them


def test_otsu_takes_the_smaller_side_as_foreground():
    image = np.full((20, 30), 200, np.uint8)
    image[5:10, 5:12] = 40  # dark objects on a bright background
    fg = otsu_foreground(image)
    assert fg.sum() == 35 and fg[5:10, 5:12].all()
    rgb = np.stack([255 - image] * 3, axis=2)  # bright on dark: the same pixels
    assert (otsu_foreground(rgb) == fg).all()
    assert not otsu_foreground(np.zeros((4, 4))).any()  # flat image: no foreground


def test_foreground_scores_pool_pixels_over_images():
    truth_a = np.zeros((4, 4), np.uint8)
    truth_a[:2, :2] = 2  # any class but 0 is foreground
    truth_b = np.zeros((4, 4), np.uint8)
    truth_b[0, :] = 1
    pred = {id(truth_a): truth_a > 0, id(truth_b): np.zeros((4, 4), bool)}
    pairs = [(truth_a, truth_a), (truth_b, truth_b)]
    dice, ratio = foreground_scores(lambda image: pred[id(image)], pairs)
    # pooled: 4 of 8 true pixels found, 4 predicted -> 2*4 / (4 + 8); per-image mean would be 0.5
    assert dice == pytest.approx(8 / 12) and ratio == pytest.approx(0.5)
    assert foreground_scores(lambda image: image > 0, pairs) == (1.0, 1.0)


def test_learning_curve_prepares_trains_and_scores_each_subset(tmp_path, tiny_checkpoint):
    """A stand-in trainer returns one checkpoint for every subset: each subset is prepared from
    its own labelme files with the whole set's classes, every point scored on the held-out
    images, and the CSV and plot agree with the points."""
    from unetkit.checkpoint import save_checkpoint
    from unetkit.data.prepare import prepare
    from unetkit.data.synthetic import make_labelme_folder

    labelme = make_labelme_folder(tmp_path / "labelme", n_images=8, size=(64, 64), seed=3)
    report = prepare(labelme, tmp_path / "dataset", val_fraction=0.25, seed=0)
    best = save_checkpoint(tiny_checkpoint(train_state={"step": 7}), tmp_path / "run" / "best.pt")
    save_checkpoint(tiny_checkpoint(train_state={"step": 12}), tmp_path / "run" / "last.pt")
    seen = []

    def train(dataset, run_dir):
        info = json.loads((dataset / "dataset.json").read_text())
        seen.append((sorted(info["split"]["train"]), info["classes"]))
        return best

    classes = ["background", "cell", "nucleus", "absent"]  # a class no image has keeps its place
    points, otsu = learning_curve(
        tmp_path, labelme, report.split, classes, best, train, (2, 4, 99), seed=0
    )
    subsets = nested_subsets(report.split["train"], (2, 4), seed=0)
    assert [s for s, _ in seen] == [subsets[2], subsets[4]]
    assert all(names == classes for _, names in seen)
    assert [p.images for p in points] == [2, 4, len(report.split["train"])]
    assert len({(p.dice, p.ratio) for p in points}) == 1  # one model, the same images
    assert 0.0 <= points[0].dice <= 1.0 and 0.0 <= otsu <= 1.0
    assert [p.steps for p in points] == [12, 12, 12]  # trained (last.pt), not best.pt's step
    assert points[-1].run == "run" and points[0].run == "run"
    with (tmp_path / "curve" / "learning_curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["images"] for r in rows] == ["2", "4", "6", "otsu"]
    assert float(rows[-1]["foreground_dice"]) == pytest.approx(otsu, abs=1e-4)
    assert float(rows[0]["foreground_dice"]) == pytest.approx(points[0].dice, abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "curve").iterdir()) == [
        "002_images", "004_images", "learning_curve.csv", "learning_curve.png"
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "curve" / "002_images" / "labelme").iterdir()) == [
        n for s in subsets[2] for n in sorted(q.name for q in labelme.iterdir() if q.stem == s)
    ]
    # again into the same folder (``unetkit demo --overwrite``): each size's folder is replaced
    again, _ = learning_curve(tmp_path, labelme, report.split, classes, best, train, (2, 4))
    assert again == points and len(seen) == 4


def test_report_shows_no_curve_of_one_point(tmp_path):
    """Sizes none of which is below the training split leave the demo's own run alone: no
    section that says it was "trained on  of the 18 training images"."""
    from unetkit.demo.curve import CurvePoint
    from unetkit.demo.report import write_report

    full = CurvePoint(18, 0.98, 1.0, 120, "run")
    small = CurvePoint(2, 0.9, 0.95, 120, "curve/002_images/run")
    alone = write_report(tmp_path, {}, {}, [], curve=([full], 0.8)).read_text()
    assert "How many images to annotate" not in alone
    page = write_report(tmp_path, {}, {}, [], curve=([small, full], 0.8)).read_text()
    assert "trained on 2 of the\n18 training images" in page
