"""Object measurements: one row per object, pixel and physical units, intensities, CSV."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from unetkit.errors import UnetkitError
from unetkit.objects.measure import object_fields, object_table, write_objects_csv

PX_FIELDS = [
    "id",
    "class",
    "area_px",
    "perimeter_px",
    "centroid_y_px",
    "centroid_x_px",
    "bbox_y0_px",
    "bbox_x0_px",
    "bbox_y1_px",
    "bbox_x1_px",
    "equivalent_diameter_px",
    "eccentricity",
    "solidity",
]


def _scene() -> np.ndarray:
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 10:30] = 1  # 10 x 20 rectangle
    labels[25:30, 40:45] = 2  # 5 x 5 square
    return labels


def test_fields_order():
    assert object_fields(0) == PX_FIELDS
    assert object_fields(2)[len(PX_FIELDS) :] == [
        "mean_intensity_c0",
        "max_intensity_c0",
        "mean_intensity_c1",
        "max_intensity_c1",
    ]
    physical = object_fields(1, pixel_size=0.5)
    assert physical[:4] == ["id", "class", "area_um2", "perimeter_um"]
    assert physical[4:6] == ["centroid_y_um", "centroid_x_um"]
    assert physical[6:10] == PX_FIELDS[6:10]  # the box stays in pixels, and says so
    assert physical[10] == "equivalent_diameter_um"
    assert physical[-3:] == ["mean_intensity_c0", "max_intensity_c0", "pixel_size_um"]
    nm = object_fields(0, pixel_size=500, unit="nm")
    assert nm[2:4] == ["area_nm2", "perimeter_nm"] and nm[-1] == "pixel_size_nm"
    assert object_fields(0, unit="nm") == PX_FIELDS  # no pixel size: pixels
    with pytest.raises(UnetkitError, match="pixel unit"):
        object_fields(0, pixel_size=0.5, unit="µm/px")


def test_rectangle_measurements():
    rows = object_table(_scene())
    assert [r["id"] for r in rows] == [1, 2]
    assert all(list(r) == PX_FIELDS for r in rows)
    rect = rows[0]
    assert rect["class"] == 1  # no classes: class 1
    assert rect["area_px"] == 200 and isinstance(rect["area_px"], int)
    box = (rect["bbox_y0_px"], rect["bbox_x0_px"], rect["bbox_y1_px"], rect["bbox_x1_px"])
    assert box == (5, 10, 15, 30)
    assert rect["centroid_y_px"] == 9.5 and rect["centroid_x_px"] == 19.5
    assert rect["equivalent_diameter_px"] == round(math.sqrt(4 * 200 / math.pi), 4)
    assert rect["solidity"] == 1.0
    # second moments of a 10 x 20 pixel grid: variances (10^2 - 1) / 12 and (20^2 - 1) / 12
    assert rect["eccentricity"] == round(math.sqrt(1 - 8.25 / 33.25), 4)
    assert 50 <= rect["perimeter_px"] <= 60
    square = rows[1]
    assert square["area_px"] == 25 and square["eccentricity"] == 0.0
    assert (square["centroid_y_px"], square["centroid_x_px"]) == (27.0, 42.0)


def test_rows_sorted_by_id_with_gaps():
    labels = np.zeros((20, 20), np.int64)
    labels[0:2, 0:2] = 9
    labels[10:12, 10:12] = 4
    assert [r["id"] for r in object_table(labels)] == [4, 9]


def test_intensities_grayscale_and_channels():
    labels = _scene()
    gray = np.zeros((40, 50), np.uint16)
    gray[5:10, 10:30] = 1000
    gray[10:15, 10:30] = 3000
    gray[25:30, 40:45] = 7
    rows = object_table(labels, gray)
    assert rows[0]["mean_intensity_c0"] == 2000.0 and rows[0]["max_intensity_c0"] == 3000
    assert rows[1]["mean_intensity_c0"] == 7.0 and rows[1]["max_intensity_c0"] == 7
    assert list(rows[0]) == object_fields(1)

    rgb = np.zeros((40, 50, 3), np.float32)
    rgb[..., 1] = 0.25
    rgb[5, 10, 2] = 2.0
    rows = object_table(labels, rgb)
    assert list(rows[0]) == object_fields(3)
    assert rows[0]["mean_intensity_c0"] == 0.0 and rows[0]["mean_intensity_c1"] == 0.25
    assert rows[0]["mean_intensity_c2"] == 0.01 and rows[0]["max_intensity_c2"] == 2.0
    assert rows[1]["max_intensity_c2"] == 0.0


def test_pixel_size_scales_lengths_and_areas():
    labels = _scene()
    px = object_table(labels)[0]
    um = object_table(labels, pixel_size=0.5)[0]
    assert list(um) == object_fields(0, 0.5)
    assert um["area_um2"] == 50.0
    assert um["perimeter_um"] == round(px["perimeter_px"] * 0.5, 4)
    assert (um["centroid_y_um"], um["centroid_x_um"]) == (4.75, 9.75)
    assert um["equivalent_diameter_um"] == round(math.sqrt(4 * 200 / math.pi) * 0.5, 4)
    assert (um["bbox_y0_px"], um["bbox_x1_px"]) == (5, 30)  # the box stays in pixels
    assert um["eccentricity"] == px["eccentricity"] and um["pixel_size_um"] == 0.5
    nm = object_table(labels, pixel_size=500.0, unit="nm")[0]
    assert list(nm) == object_fields(0, 500.0, "nm") and nm["area_nm2"] == 200 * 500.0**2


def test_classes_and_names():
    labels = _scene()
    names = ["background", "cell", "nucleus"]
    assert [r["class"] for r in object_table(labels, classes={1: 2, 2: 1})] == [2, 1]
    rows = object_table(labels, classes={1: 2, 2: 1}, class_names=names)
    assert [r["class"] for r in rows] == ["nucleus", "cell"]
    assert [r["class"] for r in object_table(labels, class_names=names)] == ["cell", "cell"]


def test_floats_rounded():
    labels = np.zeros((9, 9), np.int32)
    labels[1:4, 1:3] = 1
    labels[3, 3] = 1  # an L-ish shape: non-round numbers
    for value in object_table(labels, np.random.default_rng(0).random((9, 9)))[0].values():
        if isinstance(value, float):
            assert value == round(value, 4)


def test_empty_and_errors():
    assert object_table(np.zeros((8, 8), np.int32)) == []
    assert object_table(np.zeros((8, 8), np.int32), np.zeros((8, 8), np.uint8)) == []
    with pytest.raises(UnetkitError, match="differ in size"):
        object_table(_scene(), np.zeros((40, 49), np.uint8))
    with pytest.raises(UnetkitError, match="integer"):
        object_table(np.zeros((4, 4), np.float32))
    with pytest.raises(UnetkitError, match=">= 0"):
        object_table(np.full((4, 4), -1, np.int32))
    with pytest.raises(UnetkitError, match="pixel size"):
        object_table(_scene(), pixel_size=0)


def test_csv(tmp_path):
    fields = object_fields(1)
    rows = object_table(_scene(), np.full((40, 50), 3, np.uint8), class_names=["bg", "cell"])
    write_objects_csv(tmp_path / "objects.csv", rows, fields)
    with open(tmp_path / "objects.csv", newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [r["id"] for r in read] == ["1", "2"]
    assert read[0]["class"] == "cell" and read[0]["area_px"] == "200"
    assert read[0]["max_intensity_c0"] == "3"

    write_objects_csv(tmp_path / "empty.csv", object_table(np.zeros((5, 5), np.int32)), fields)
    assert (tmp_path / "empty.csv").read_text() == ",".join(fields) + "\n"
    row = {"id": 1, "class": "cell, round", "area_px": 3, "score": None}
    write_objects_csv(tmp_path / "one.csv", [row], ["id", "class", "area_px", "score"])
    assert (tmp_path / "one.csv").read_bytes() == b'id,class,area_px,score\n1,"cell, round",3,\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temps left
