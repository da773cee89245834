"""Objects as files other tools read: labelme polygons, GeoJSON for QuPath, COCO instances.

Every object becomes one polygon: the outer contour of its largest piece, through the centres
of its boundary pixels (``cv2.findContours``, as ``mask_to_labelme``), x then y, in pixels of
the label image. An object too thin for a 3-point contour (a pixel, a 1-pixel line) gets the
corners of its bounding box instead, so that no object is left out of a file.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..data.labelme import labelme_document, polygon_shape
from ..errors import UnetkitError
from .measure import _check_labels

# the namespace of the GeoJSON feature ids: uuid5(namespace, "object-<id>"), stable per id
_FEATURE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "unetkit/objects")


def _crops(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """(id, bounding-box slices) of every object present, by id (one pass over the image)."""
    return [(i + 1, s) for i, s in enumerate(ndimage.find_objects(labels)) if s is not None]


def _polygon(crop: np.ndarray, y0: int, x0: int) -> list[list[float]]:
    """Outer contour of the largest piece of a binary crop, offset to image coordinates."""
    padded = np.pad(crop.astype(np.uint8), 1)  # contours of pixels on the crop's edge
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        best = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
        if len(best) >= 3:
            points = best[:, 0, :].astype(np.float64) + (x0 - 1, y0 - 1)
            return points.tolist()
    h, w = crop.shape
    x1, y1 = float(x0 + w - 1), float(y0 + h - 1)
    return [[float(x0), float(y0)], [x1, float(y0)], [x1, y1], [float(x0), y1]]


def object_polygons(labels: np.ndarray) -> dict[int, list[list[float]]]:
    """One outline per object (module docstring).

    Args:
        labels: (H, W) integer ids, 0 = background.

    Returns:
        id -> [[x, y], ...] (at least 3 points), by id.
    """
    labels = _check_labels(labels)
    polygons = {}
    for object_id, (rows, cols) in _crops(labels):
        crop = labels[rows, cols] == object_id
        polygons[object_id] = _polygon(crop, rows.start, cols.start)
    return polygons


def _class_of(object_id: int, classes: dict[int, int] | None) -> int:
    return 1 if classes is None else int(classes.get(object_id, 0))


def _name(cls: int, class_names: Sequence[str]) -> str:
    return class_names[cls] if 0 <= cls < len(class_names) else str(cls)


def labelme_objects(
    labels: np.ndarray,
    classes: dict[int, int] | None,
    class_names: list[str],
    image_path: str,
) -> dict:
    """Objects as a labelme 5.x document: one polygon per object, ``group_id`` = its id.

    Args:
        labels: (H, W) integer ids, 0 = background.
        classes: object id -> class index; None = every object is class 1.
        class_names: names by class index (the shapes' labels).
        image_path: ``imagePath`` (relative to the JSON file, as labelme resolves it).

    Returns:
        A document with the keys of ``mask_to_labelme``'s.
    """
    labels = _check_labels(labels)
    shapes = [
        polygon_shape(_name(_class_of(object_id, classes), class_names), points, object_id)
        for object_id, points in object_polygons(labels).items()
    ]
    return labelme_document(shapes, image_path, labels.shape)


def feature_id(object_id: int) -> str:
    """The GeoJSON feature id of an object: a UUID (as QuPath expects), the same every run."""
    return str(uuid.uuid5(_FEATURE_NAMESPACE, f"object-{object_id}"))


def geojson_objects(
    labels: np.ndarray,
    classes: dict[int, int] | None,
    class_names: list[str],
    palette: Sequence[Sequence[int]] | None = None,
) -> dict:
    """Objects as a GeoJSON FeatureCollection of QuPath detections (File > Import objects).

    Each feature: ``id`` (``feature_id``), a closed ``Polygon`` in pixel coordinates (x, y),
    ``properties`` ``objectType`` "detection", ``classification`` {``name``, ``color``
    [r, g, b]} and ``object_id`` (the id in the label image).

    Args:
        labels: (H, W) integer ids, 0 = background.
        classes: object id -> class index; None = every object is class 1.
        class_names: names by class index.
        palette: colour per class index; default (and beyond it): the VOC colour map.

    Returns:
        The FeatureCollection.
    """
    from ..palette import make_palette

    labels = _check_labels(labels)
    polygons = object_polygons(labels)
    used = [_class_of(i, classes) for i in polygons]
    colours = make_palette(max([len(class_names), *(c + 1 for c in used)]))
    for cls, colour in enumerate([] if palette is None else palette):
        colours[cls] = [int(v) for v in colour[:3]]
    features = []
    for (object_id, points), cls in zip(polygons.items(), used):
        features.append(
            {
                "type": "Feature",
                "id": feature_id(object_id),
                "geometry": {"type": "Polygon", "coordinates": [[*points, points[0]]]},
                "properties": {
                    "objectType": "detection",
                    "classification": {
                        "name": _name(cls, class_names),
                        "color": colours[max(cls, 0)],
                    },
                    "object_id": object_id,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def coco_document(
    entries: list[tuple[str, int, int, np.ndarray, dict[int, int] | None]],
    class_names: list[str],
) -> dict:
    """Objects of a folder of images as COCO instance segmentation.

    Categories are the classes 1..K-1 (``id`` = class index); each object is one annotation
    with one polygon (``[x0, y0, x1, y1, ...]``), ``area`` = its pixel count, ``bbox``
    ``[x, y, w, h]`` from its pixels and ``iscrowd`` 0. Objects of class 0 (background only
    under them) or of a class beyond ``class_names`` have no category and are left out.

    Args:
        entries: per image ``(file_name, height, width, labels, classes)``; ``classes`` None =
            every object is class 1.
        class_names: names by class index (0 = background).

    Returns:
        ``{"images", "annotations", "categories"}``; image and annotation ids from 1.

    Raises:
        UnetkitError: labels whose size is not the entry's height and width.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories = [{"id": c, "name": class_names[c]} for c in range(1, len(class_names))]
    for image_id, (file_name, height, width, labels, classes) in enumerate(entries, start=1):
        labels = _check_labels(labels)
        if labels.shape != (int(height), int(width)):
            raise UnetkitError(
                f"{file_name}: labels {labels.shape} are not the image size ({height}, {width})"
            )
        images.append(
            {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
        )
        areas = np.bincount(labels.ravel()) if labels.size else np.zeros(1, np.int64)
        for object_id, (rows, cols) in _crops(labels):
            cls = _class_of(object_id, classes)
            if not 1 <= cls < len(class_names):
                continue
            crop = labels[rows, cols] == object_id
            y0, x0 = rows.start, cols.start
            points = _polygon(crop, y0, x0)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls,
                    "segmentation": [[v for point in points for v in point]],
                    "area": int(areas[object_id]),
                    "bbox": [x0, y0, cols.stop - x0, rows.stop - y0],
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}
