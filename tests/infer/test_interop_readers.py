"""Object files read back by the tools people feed them into: pycocotools, shapely, labelme.

Every exported object, rasterised by the reader's own code, must give back its pixels:
COCO RLE and edge-traced polygons through ``pycocotools`` (``annToMask``, ``COCOeval``),
GeoJSON geometries through ``shapely`` (valid, area = pixel count, holes kept), labelme
polygons through ``labelme.utils.shape_to_mask``. The scenes are random label images with
touching objects, holes, diagonal-only contacts, 1-pixel objects and objects on the edge.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from scipy import ndimage

from unetkit.objects.formats import coco_document, geojson_objects, labelme_objects

shapely = pytest.importorskip("shapely")
pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NAMES = ["background", "cell", "nucleus"]


def _random_scene(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """Speckled random objects: touching ones, holes, diagonal-only contacts, 1-pixel pieces
    and pieces on the image edge (ids 1..N, not renumbered, some objects in pieces)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(size, np.int32)
    for object_id in range(1, 12):
        y, x = rng.integers(-3, size[0]), rng.integers(-3, size[1])
        h, w = rng.integers(1, 12, size=2)
        labels[max(y, 0) : y + h, max(x, 0) : x + w] = object_id
    noise = rng.random(size) < 0.12  # holes, spikes and diagonal contacts
    labels[noise] = 0
    labels[rng.random(size) < 0.03] = 12  # single pixels and diagonal chains of one object
    labels[rng.integers(0, size[0]), rng.integers(0, size[1])] = 13  # a 1-pixel object
    return labels


def _cell_scene() -> np.ndarray:
    """Cells with nuclei in their holes (nucleus ids after their cell), a cell with an empty
    hole, a cell whose hole meets the outside at a corner, two cells touching at a corner."""
    labels = np.zeros((40, 50), np.int32)
    yy, xx = np.mgrid[:40, :50]
    labels[(yy - 12) ** 2 + (xx - 12) ** 2 <= 80] = 1
    labels[(yy - 12) ** 2 + (xx - 12) ** 2 <= 12] = 2  # nucleus of 1
    labels[25:38, 3:16] = 3
    labels[29:34, 7:12] = 0  # empty hole
    labels[3:14, 28:40] = 4
    labels[6:11, 31:37] = 5  # nucleus of 4
    labels[20:26, 25:31] = 6
    labels[22:26, 27:31] = 0  # a notch ...
    labels[21, 30] = 0  # ... whose corner meets the outside diagonally
    labels[20:21, 29:30] = 6
    labels[30:33, 40:43] = 7
    labels[33:36, 43:46] = 8  # touches 7 at one corner only
    labels[39, 49] = 9  # a pixel in the corner
    return labels


SCENES = [_cell_scene(), *[_random_scene(seed) for seed in range(6)]]


def _ids(labels: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(labels) if i]


def _coco(doc: dict) -> COCO:
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _filled_pieces(mask: np.ndarray) -> np.ndarray:
    """The union of the 4-connected pieces of a mask, each with its holes filled: what the
    exteriors of its edge polygons enclose."""
    pieces, count = ndimage.label(mask)
    filled = np.zeros_like(mask)
    for piece in range(1, count + 1):
        filled |= ndimage.binary_fill_holes(pieces == piece)
    return filled


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("fmt", ["rle", "polygon"])
def test_pycocotools_rasterises_every_annotation_to_its_object(fmt):
    entries = [(f"{i}.png", *labels.shape, labels, None) for i, labels in enumerate(SCENES)]
    doc = coco_document(entries, NAMES, segmentation=fmt)
    coco = _coco(json.loads(json.dumps(doc)))
    found = 0
    for ann in doc["annotations"]:
        labels = SCENES[ann["image_id"] - 1]
        truth = labels == ann["object_id"]
        raster = coco.annToMask(ann).astype(bool)
        rle = coco.annToRLE(ann)
        assert ann["area"] == int(mask_utils.area(rle))  # area = what the segmentation encodes
        assert ann["score"] == 1.0
        filled = _filled_pieces(truth)
        if fmt == "rle" or (filled == truth).all():  # polygons have no holes in COCO
            assert (raster == truth).all(), (ann["image_id"], ann["object_id"])
        else:
            assert (raster == filled).all()
        found += 1
    assert found == sum(len(_ids(labels)) for labels in SCENES)


def test_cocoeval_scores_the_file_as_results():
    labels = SCENES[0]
    doc = coco_document([("a.png", *labels.shape, labels, None)], NAMES)
    gt = _coco(json.loads(json.dumps(doc)))
    with contextlib.redirect_stdout(io.StringIO()):
        results = gt.loadRes(json.loads(json.dumps(doc["annotations"])))
        evaluator = COCOeval(gt, results, "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # the objects scored against themselves


def test_coco_scores_from_the_post_processing():
    labels = SCENES[0]
    doc = coco_document([("a.png", *labels.shape, labels, None)], NAMES, scores=[{1: 0.25}])
    scores = {a["object_id"]: a["score"] for a in doc["annotations"]}
    assert scores[1] == 0.25 and scores[2] == 1.0


def _geometries(doc: dict) -> dict[int, object]:
    from shapely.geometry import shape

    out = {}
    for feature in doc["features"]:
        props = feature["properties"]
        out[props["object_id"]] = shape(feature["geometry"])
        if "nucleusGeometry" in feature:
            out[props["nucleus_object_id"]] = shape(feature["nucleusGeometry"])
    return out


def test_geojson_geometries_are_valid_exact_and_keep_holes():
    for labels in SCENES:
        doc = geojson_objects(labels, None, NAMES, image_name="a.png")
        geometries = _geometries(json.loads(json.dumps(doc)))
        assert sorted(geometries) == _ids(labels)
        for object_id, geometry in geometries.items():
            assert shapely.is_valid(geometry), (object_id, shapely.is_valid_reason(geometry))
            assert geometry.area == (labels == object_id).sum(), object_id
            # the geometry covers exactly the object's pixels: their centres inside, others out
            ys, xs = np.nonzero(labels == object_id)
            assert shapely.contains_xy(geometry, xs + 0.5, ys + 0.5).all()
        for feature in doc["features"]:
            for key in ("geometry", "nucleusGeometry"):
                if key in feature:  # no collinear points: every vertex turns
                    _check_no_collinear(feature[key])


def _check_no_collinear(geometry: dict) -> None:
    polygons = geometry["coordinates"]
    polygons = [polygons] if geometry["type"] == "Polygon" else polygons
    for polygon in polygons:
        for ring in polygon:
            ring = np.asarray(ring[:-1], np.float64)
            before, after = ring - np.roll(ring, 1, 0), np.roll(ring, -1, 0) - ring
            turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
            assert (turns != 0).all()


def test_geojson_holes_and_cells_with_nuclei():
    labels = _cell_scene()
    classes = {i: 1 for i in range(1, 10)} | {2: 2, 5: 2}
    doc = geojson_objects(labels, classes, NAMES, image_name="a.png")
    by_id = {f["properties"]["object_id"]: f for f in doc["features"]}
    assert sorted(by_id) == [1, 3, 4, 6, 7, 8, 9]  # nuclei 2 and 5 ride with their cells
    cell = by_id[1]
    assert cell["properties"]["objectType"] == "cell"
    assert cell["properties"]["nucleus_object_id"] == 2
    assert cell["nucleusGeometry"]["type"] == "Polygon"
    from shapely.geometry import shape

    # QuPath's cell outline encloses its nucleus
    assert shape(cell["geometry"]).area == ((labels == 1) | (labels == 2)).sum()
    assert shape(cell["nucleusGeometry"]).area == (labels == 2).sum()
    hole = shape(by_id[3]["geometry"])
    assert len(hole.interiors) == 1 and hole.area == (labels == 3).sum()
    assert by_id[3]["properties"]["objectType"] == "detection"
    corner = [by_id[7]["geometry"], by_id[8]["geometry"]]
    assert all(g["type"] == "Polygon" for g in corner)


def test_geojson_ids_unique_across_images_and_stable():
    labels = SCENES[1]
    first = geojson_objects(labels, None, NAMES, image_name="a.png")
    second = geojson_objects(labels, None, NAMES, image_name="b.png")
    ids = [f["id"] for f in first["features"] + second["features"]]
    assert len(set(ids)) == len(ids)
    assert geojson_objects(labels, None, NAMES, image_name="a.png") == first


def test_labelme_shape_to_mask_gives_back_every_object(monkeypatch):
    from PIL import Image

    # importing labelme lifts Pillow's decompression-bomb limit for the whole process
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    labelme_utils = pytest.importorskip("labelme.utils")
    for labels in SCENES:
        doc = labelme_objects(labels, None, NAMES, "a.png")
        painted = np.zeros(labels.shape, np.int64)
        union: dict[int, np.ndarray] = {}
        for shape in doc["shapes"]:  # file order, later over earlier, as labelme paints
            mask = labelme_utils.shape_to_mask(labels.shape, shape["points"], "polygon")
            painted[mask] = shape["group_id"]
            union[shape["group_id"]] = union.get(shape["group_id"], False) | mask
        assert sorted(union) == _ids(labels)
        for object_id, mask in union.items():
            # every piece exact; holes filled (labelme polygons have none)
            assert (mask == ndimage.binary_fill_holes(labels == object_id)).all(), object_id
    labels = SCENES[0]  # holes with a later object in them read back exactly when painted
    doc = labelme_objects(labels, None, NAMES, "a.png")
    painted = np.zeros(labels.shape, np.int64)
    for shape in doc["shapes"]:
        painted[labelme_utils.shape_to_mask(labels.shape, shape["points"], "polygon")] = shape[
            "group_id"
        ]
    assert ((painted == labels) | (labels == 0)).all()


def test_predict_writes_files_the_readers_take_back(tmp_path, grey_level_model):
    """End to end: ``predict_paths`` on two images; coco.json through pycocotools (as data set
    and as results), GeoJSON through shapely, against the instance PNGs written beside them."""
    from hand_wired import instance_checkpoint, load_predictor, two_cell_images
    from unetkit.data.instances import read_instances
    from unetkit.infer.outputs import predict_paths

    path = instance_checkpoint(tmp_path, grey_level_model)
    inputs, _, _ = two_cell_images(tmp_path)
    out = tmp_path / "out"
    predict_paths(load_predictor(path), [inputs], out, geojson=True, coco=True, pixel_size=0.5,
                  progress=False)  # fmt: skip
    doc = json.loads((out / "coco.json").read_text())
    coco = _coco(doc)
    ids = {im["id"]: read_instances(out / im["file_name"].replace(".png", "_instances.png"))
           for im in doc["images"]}  # fmt: skip
    assert doc["annotations"]
    for ann in doc["annotations"]:
        truth = ids[ann["image_id"]] == ann["object_id"]
        assert (coco.annToMask(ann).astype(bool) == truth).all()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(doc["annotations"]), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)
    feature_ids = []
    for name in ("a", "b"):
        geo = json.loads((out / f"{name}.geojson").read_text())
        labels = read_instances(out / f"{name}_instances.png")
        for object_id, geometry in _geometries(geo).items():
            assert shapely.is_valid(geometry) and geometry.area == (labels == object_id).sum()
        feature_ids += [f["id"] for f in geo["features"]]
        measured = geo["features"][0]["properties"]["measurements"]
        assert measured["area_um2"] == pytest.approx(geo_area(geo["features"][0]) * 0.25)
    assert len(set(feature_ids)) == len(feature_ids)  # unique across the folder


def geo_area(feature: dict) -> float:
    from shapely.geometry import shape

    return shape(feature["geometry"]).area


def test_predicted_objects_carry_their_score(tmp_path, grey_level_model):
    """COCO ``score`` and the CSV ``score`` column are each object's mean object probability,
    ``1 - p(background)`` over its pixels (the probabilities saved beside them), not 1.0."""
    from PIL import Image

    from hand_wired import cells, instance_checkpoint, load_predictor
    from unetkit.data.instances import read_instances
    from unetkit.infer.outputs import predict_paths

    path = instance_checkpoint(tmp_path, grey_level_model)
    image, _ = cells(60, 75)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    predict_paths(load_predictor(path), [tmp_path / "a.png"], out, coco=True, save_probs=True,
                  progress=False)  # fmt: skip
    ids = read_instances(out / "a_instances.png")
    objectness = 1.0 - np.load(out / "a_probs.npy").astype(np.float64)[0]
    expected = {i: float(objectness[ids == i].mean()) for i in _ids(ids)}
    assert expected
    doc = json.loads((out / "coco.json").read_text())
    coco_scores = {ann["object_id"]: ann["score"] for ann in doc["annotations"]}
    with open(out / "a_objects.csv") as f:
        csv_scores = {int(r["id"]): float(r["score"]) for r in __import__("csv").DictReader(f)}
    for object_id, score in expected.items():
        assert abs(coco_scores[object_id] - score) < 2e-3  # the saved probabilities are fp16
        assert abs(csv_scores[object_id] - score) < 2e-3
    assert min(expected.values()) < 0.999  # a real probability, not the 1.0 of no score
