"""Object file formats: polygons, labelme, GeoJSON (QuPath) and COCO round-trip to the pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from unetkit.data.labelme import LABELME_VERSION
from unetkit.errors import UnetkitError
from unetkit.infer.writers import mask_to_labelme
from unetkit.objects.formats import (
    coco_document,
    feature_id,
    geojson_objects,
    labelme_objects,
    object_geometries,
    object_outlines,
    rle_string,
)

NAMES = ["background", "cell", "nucleus"]


def _scene() -> np.ndarray:
    """Touching, concave, round, split, thin and single-pixel objects (ids 1..8)."""
    labels = np.zeros((60, 80), np.int32)
    labels[5:20, 5:25] = 1
    labels[5:20, 25:40] = 2  # touches 1
    cv2.circle(labels, (60, 15), 9, 3, -1)
    labels[30:50, 5:30] = 4
    labels[35:45, 12:30] = 0  # a C shape
    labels[30:40, 40:50] = 5
    labels[45:48, 40:44] = 5  # a second, smaller piece of object 5
    labels[55, 10:40] = 6  # a 1-pixel-wide line
    labels[58, 70] = 7  # a single pixel
    labels[30:52, 60:75] = 8
    return labels


def _fill(points, shape) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [np.rint(np.asarray(points)).astype(np.int32)], 1)
    return canvas.astype(bool)


def _check_round_trip(outlines: dict[int, list], labels: np.ndarray) -> None:
    """Centre outlines (all pieces of an object) filled by cv2 give back the object."""
    ids = [int(i) for i in np.unique(labels) if i]
    assert sorted(outlines) == ids  # no object dropped
    for object_id, pieces in outlines.items():
        filled = np.zeros(labels.shape, bool)
        for points in pieces:
            filled |= _fill(points, labels.shape)
        assert (filled == (labels == object_id)).all(), object_id


def test_outlines_every_piece_through_pixel_centres():
    labels = _scene()
    outlines = object_outlines(labels)
    assert all(len(p) >= 3 and all(len(xy) == 2 for xy in p) for o in outlines.values() for p in o)
    _check_round_trip(outlines, labels)
    assert outlines[1] == [[[5.0, 5.0], [5.0, 19.0], [24.0, 19.0], [24.0, 5.0]]]  # x, y
    assert outlines[7] == [[[70.0, 58.0]] * 3]  # a pixel: its centre, repeated
    assert len(outlines[5]) == 2  # both pieces
    (line,) = outlines[6]
    assert min(x for x, _ in line) == 10 and max(x for x, _ in line) == 39
    assert {y for _, y in line} == {55.0}


def test_geometries_follow_pixel_edges():
    labels = _scene()
    geometries = object_geometries(labels)
    assert sorted(geometries) == list(range(1, 9))
    assert list(geometries[1].exterior.coords) == [(5, 5), (25, 5), (25, 20), (5, 20), (5, 5)]
    pixel = geometries[7].exterior.coords
    assert len(pixel) == 5 and set(pixel) == {(70, 58), (71, 58), (71, 59), (70, 59)}
    assert geometries[5].geom_type == "MultiPolygon" and len(geometries[5].geoms) == 2
    for object_id, geometry in geometries.items():
        assert geometry.area == (labels == object_id).sum() and geometry.is_valid


def test_geometries_of_objects_on_the_image_edge():
    labels = np.ones((6, 7), np.int32)
    (geometry,) = object_geometries(labels).values()
    assert list(geometry.exterior.coords) == [(0, 0), (7, 0), (7, 6), (0, 6), (0, 0)]
    assert object_geometries(np.zeros((4, 4), np.int32)) == {}
    assert object_outlines(labels) == {1: [[[0.0, 0.0], [0.0, 5.0], [6.0, 5.0], [6.0, 0.0]]]}


def test_rle_string_matches_pycocotools_examples():
    # pycocotools.mask.encode of a 4 x 4 mask with column 1 set and of an empty one
    assert rle_string([4, 4, 8]) == "448"
    assert rle_string([16]) == "`0"


def test_labelme_document():
    labels = _scene()
    classes = {i: 1 for i in range(1, 9)} | {3: 2}
    doc = labelme_objects(labels, classes, NAMES, "../img.png")
    assert list(doc) == list(mask_to_labelme(np.zeros((2, 2), np.uint8), NAMES, "x"))
    assert doc["version"] == LABELME_VERSION
    assert (doc["imageHeight"], doc["imageWidth"], doc["imagePath"]) == (60, 80, "../img.png")
    assert doc["imageData"] is None
    shapes = doc["shapes"]
    assert [s["group_id"] for s in shapes] == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # 5: two pieces
    assert all(s["shape_type"] == "polygon" for s in shapes)
    assert [s["label"] for s in shapes] == ["cell", "cell", "nucleus"] + ["cell"] * 6
    outlines: dict[int, list] = {}
    for shape in shapes:
        outlines.setdefault(shape["group_id"], []).append(shape["points"])
    _check_round_trip(outlines, labels)
    json.dumps(doc)  # plain JSON types

    default = labelme_objects(labels, None, NAMES, "img.png")
    assert {s["label"] for s in default["shapes"]} == {"cell"}


def test_geojson_features():
    labels = _scene()
    classes = {i: 2 for i in range(1, 9)} | {1: 1}
    doc = geojson_objects(labels, classes, NAMES, palette=[[0, 0, 0], [10, 20, 30]])
    assert doc["type"] == "FeatureCollection"
    features = doc["features"]
    assert len(features) == 8
    assert [f["properties"]["object_id"] for f in features] == list(range(1, 9))
    assert len({f["id"] for f in features}) == 8 and features[0]["id"] == feature_id(1)
    assert feature_id(1, "a.png") != feature_id(1, "b.png")
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "detection"
        assert "measurements" not in feature["properties"]  # no table given
        geometry = feature["geometry"]
        multi = feature["properties"]["object_id"] == 5
        assert geometry["type"] == ("MultiPolygon" if multi else "Polygon")
        for polygon in geometry["coordinates"] if multi else [geometry["coordinates"]]:
            assert len(polygon) == 1  # no holes in this scene
            ring = polygon[0]
            assert ring[0] == ring[-1] and len(ring) >= 5  # closed
    assert features[0]["geometry"]["coordinates"] == [[[5, 5], [25, 5], [25, 20], [5, 20], [5, 5]]]
    first, second = (f["properties"]["classification"] for f in features[:2])
    assert first == {"name": "cell", "color": [10, 20, 30]}  # from the palette
    assert second == {"name": "nucleus", "color": [0, 128, 0]}  # beyond it: VOC colours
    assert geojson_objects(labels, classes, NAMES, [[0, 0, 0], [10, 20, 30]]) == doc  # stable
    assert json.loads(json.dumps(doc)) == doc


def test_coco_folder():
    first = _scene()
    second = np.zeros((30, 40), np.int32)
    second[2:12, 3:9] = 1
    second[20:25, 30:40] = 2
    classes = {i: 1 for i in range(1, 9)} | {4: 2}
    entries = [("a.png", 60, 80, first, classes), ("b.png", 30, 40, second, None)]
    doc = coco_document(entries, NAMES, segmentation="polygon")
    assert doc["categories"] == [{"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}]
    assert doc["images"] == [
        {"id": 1, "file_name": "a.png", "height": 60, "width": 80},
        {"id": 2, "file_name": "b.png", "height": 30, "width": 40},
    ]
    annotations = doc["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, 11))  # unique across the folder
    assert [a["image_id"] for a in annotations] == [1] * 8 + [2] * 2
    assert [a["category_id"] for a in annotations] == [1, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    images = {1: first, 2: second}
    for index, ann in enumerate(annotations):
        labels = images[ann["image_id"]]
        object_id = index + 1 if ann["image_id"] == 1 else index - 7
        pixels = labels == object_id
        ys, xs = np.nonzero(pixels)
        assert ann["area"] == int(pixels.sum()) and isinstance(ann["area"], int)
        x0, y0 = int(xs.min()), int(ys.min())
        assert ann["bbox"] == [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        assert ann["iscrowd"] == 0 and ann["score"] == 1.0 and ann["object_id"] == object_id
        assert len(ann["segmentation"]) == (2 if (ann["image_id"], object_id) == (1, 5) else 1)
        for flat in ann["segmentation"]:
            assert len(flat) >= 8 and len(flat) % 2 == 0 and all(isinstance(v, int) for v in flat)
    rle = coco_document(entries, NAMES)["annotations"]  # the default: compressed RLE
    assert [a["area"] for a in rle] == [a["area"] for a in annotations]
    # rows 20-24 of columns 30-39 of a 30 x 40 image, column-major: from pixel 30 * 30 + 20
    counts = [920] + [5, 25] * 9 + [5, 5]
    assert rle[-1]["segmentation"] == {"size": [30, 40], "counts": rle_string(counts)}
    assert annotations[-1]["bbox"] == [30, 20, 10, 5]
    json.dumps(doc)


def test_coco_skips_objects_without_category_and_checks_sizes():
    labels = np.zeros((10, 10), np.int32)
    labels[1:4, 1:4] = 1
    labels[6:9, 6:9] = 2
    doc = coco_document([("x.png", 10, 10, labels, {1: 0, 2: 1})], NAMES)
    assert [a["category_id"] for a in doc["annotations"]] == [1]
    assert coco_document([], NAMES)["images"] == []
    with pytest.raises(UnetkitError, match="not the image size"):
        coco_document([("x.png", 10, 12, labels, None)], NAMES)
    with pytest.raises(UnetkitError, match="segmentation must be one of rle, polygon"):
        coco_document([("x.png", 10, 10, labels, None)], NAMES, segmentation="mask")
