"""Objects as files other tools read: labelme polygons, GeoJSON for QuPath, COCO instances.

Pixel (row r, column c) is the square [c, c + 1] x [r, r + 1] in x, y image coordinates.

- GeoJSON and COCO polygons follow pixel *edges* (``object_geometries``): every vertex is a
  pixel corner where the outline turns (no collinear points), holes are interior rings, and an
  object in several pieces is a MultiPolygon (several polygons in COCO). Pieces are
  4-connected: two pixels touching only at a corner are two polygons meeting at a point, and a
  background region meeting the outside at a corner only is a hole touching the outline there,
  so every geometry is valid (OGC, as shapely checks) and its area is the pixel count exactly.
  Exteriors run counter-clockwise and holes clockwise in x, y (RFC 7946's rule). pycocotools
  rasterises these polygons to exactly the object's pixels, except that COCO polygons have no
  holes: an object with a hole is exact only as RLE (the default of ``coco_document``).
- labelme polygons run through the *centres* of an object's boundary pixels
  (``object_outlines``, ``cv2.findContours``), one polygon per 8-connected piece, all with the
  object's ``group_id``: labelme fills a polygon and draws its outline through the vertices
  (``labelme.utils.shape_to_mask``), so these give back every piece exactly, where edge
  polygons would grow by a row and a column. labelme polygons have no holes: a hole is filled,
  unless another object in it is painted after (shapes are in id order, and an object in a hole
  has a larger id when ids are in raster order, as ``separate_objects`` numbers them).

Edge geometries need shapely (imported when used).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..data.labelme import labelme_document, polygon_shape
from ..errors import UnetkitError
from .measure import _check_labels

# the namespace of the GeoJSON feature ids: uuid5(namespace, "<image>/object-<id>")
_FEATURE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "unetkit/objects")
COCO_SEGMENTATIONS = ("rle", "polygon")


def _crops(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """(id, bounding-box slices) of every object present, by id (one pass over the image)."""
    return [(i + 1, s) for i, s in enumerate(ndimage.find_objects(labels)) if s is not None]


def _outlines(crop: np.ndarray, y0: int, x0: int) -> list[list[list[float]]]:
    """Centre outlines of every 8-connected piece of a binary crop, in image coordinates."""
    padded = np.pad(crop.astype(np.uint8), 1)  # contours of pixels on the crop's edge
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        points = (contour[:, 0, :].astype(np.float64) + (x0 - 1, y0 - 1)).tolist()
        while len(points) < 3:  # a pixel or a 2-pixel piece: its points repeated
            points.append(points[-1])
        outlines.append(points)
    return outlines


def object_outlines(labels: np.ndarray) -> dict[int, list[list[list[float]]]]:
    """labelme outlines of every object (module docstring): centre-traced, one per piece.

    Args:
        labels: (H, W) integer ids, 0 = background.

    Returns:
        id -> [[[x, y], ...], ...]: one outline (>= 3 points) per 8-connected piece, by id.
    """
    labels = _check_labels(labels)
    return {
        object_id: _outlines(labels[rows, cols] == object_id, rows.start, cols.start)
        for object_id, (rows, cols) in _crops(labels)
    }


def _runs(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(id, row, x0, x1) of every horizontal run of one object's pixels, by id then row."""
    height, width = labels.shape
    padded = np.zeros((height, width + 2), labels.dtype)
    padded[:, 1:-1] = labels
    rows, xs = np.nonzero(padded[:, 1:] != padded[:, :-1])  # x of every change, by row
    ids = padded[rows, xs + 1]  # the run that starts at the change
    ends = np.append(xs[1:], width)  # the next change in the same row ends it
    keep = (ids > 0) & np.append(rows[1:] == rows[:-1], False)
    ids, rows, xs, ends = ids[keep], rows[keep], xs[keep], ends[keep]
    order = np.argsort(ids, kind="stable")
    return ids[order], rows[order], xs[order], ends[order]


def object_geometries(labels: np.ndarray) -> dict[int, Any]:
    """Edge-traced geometries of every object (module docstring), as shapely objects.

    Each object is the union of its pixels' squares (row runs joined by GEOS), with collinear
    vertices dropped and rings oriented: exact, valid, holes kept.

    Args:
        labels: (H, W) integer ids, 0 = background.

    Returns:
        id -> shapely ``Polygon`` or ``MultiPolygon`` (integer coordinates), by id.
    """
    import shapely

    labels = _check_labels(labels)
    ids, rows, x0, x1 = _runs(labels)
    if not len(ids):
        return {}
    boxes = shapely.box(x0, rows, x1, rows + 1)
    present, starts = np.unique(ids, return_index=True)
    unions = [shapely.union_all(group) for group in np.split(boxes, starts[1:])]
    geometries = shapely.orient_polygons(shapely.simplify(np.array(unions), 0), exterior_cw=False)
    return dict(zip(present.tolist(), geometries.tolist()))


def _polygons(geometry: Any) -> list[Any]:
    return list(geometry.geoms) if geometry.geom_type == "MultiPolygon" else [geometry]


def _ring(ring: Any) -> list[list[int]]:
    return [[int(x), int(y)] for x, y in ring.coords]


def geometry_json(geometry: Any) -> dict:
    """A shapely Polygon / MultiPolygon as a GeoJSON geometry with integer coordinates."""
    polygons = [
        [_ring(p.exterior), *(_ring(hole) for hole in p.interiors)] for p in _polygons(geometry)
    ]
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


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
    """Objects as a labelme 5.x document: one polygon per piece of an object, ``group_id`` =
    its id (labelme joins shapes of one label and group id into one instance).

    Args:
        labels: (H, W) integer ids, 0 = background.
        classes: object id -> class index; None = every object is class 1.
        class_names: names by class index (the shapes' labels).
        image_path: ``imagePath`` (relative to the JSON file, as labelme resolves it).

    Returns:
        A document with the keys of ``mask_to_labelme``'s; shapes by object id.
    """
    labels = _check_labels(labels)
    shapes = [
        polygon_shape(_name(_class_of(object_id, classes), class_names), points, object_id)
        for object_id, outlines in object_outlines(labels).items()
        for points in outlines
    ]
    return labelme_document(shapes, image_path, labels.shape)


def feature_id(object_id: int, image_name: str = "") -> str:
    """The GeoJSON feature id of an object of an image: a UUID (as QuPath expects), unique
    across the images of a folder and the same every run."""
    return str(uuid.uuid5(_FEATURE_NAMESPACE, f"{image_name}/object-{object_id}"))


def enclosed_objects(labels: np.ndarray, classes: dict[int, int] | None = None) -> dict[int, int]:
    """Objects lying in a hole of another object of another class: nucleus id -> cell id.

    An object is enclosed when every pixel around it (8-neighbours) belongs to one other object
    and it does not touch the image edge; the pair is kept when their classes differ and the
    cell encloses no other object (a QuPath cell has one nucleus).

    Args:
        labels: (H, W) integer ids, 0 = background.
        classes: object id -> class index; None = every object is class 1 (then no pairs).

    Returns:
        nucleus id -> cell id.
    """
    labels = _check_labels(labels)
    if classes is None or not labels.any():
        return {}
    count = int(labels.max())
    padded = np.pad(labels, 1, constant_values=-1)  # -1: outside the image
    centre = padded[1:-1, 1:-1]
    lowest = np.full(count + 1, np.iinfo(np.int64).max, np.int64)
    highest = np.full(count + 1, np.iinfo(np.int64).min, np.int64)
    height, width = labels.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            other = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            edge = (other != centre) & (centre > 0)
            np.minimum.at(lowest, centre[edge], other[edge])
            np.maximum.at(highest, centre[edge], other[edge])
    pairs = {}
    for nucleus in np.nonzero((lowest == highest) & (lowest > 0))[0].tolist():
        cell = int(lowest[nucleus])
        if _class_of(nucleus, classes) != _class_of(cell, classes):
            pairs[nucleus] = cell
    cells = list(pairs.values())
    return {n: c for n, c in pairs.items() if cells.count(c) == 1}


def _measurements(row: dict, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{name}": float(value)
        for name, value in row.items()
        if name not in ("id", "class") and isinstance(value, (int, float)) and math.isfinite(value)
    }


def geojson_objects(
    labels: np.ndarray,
    classes: dict[int, int] | None,
    class_names: list[str],
    palette: Sequence[Sequence[int]] | None = None,
    image_name: str = "",
    table: list[dict] | None = None,
) -> dict:
    """Objects as a GeoJSON FeatureCollection of QuPath objects (File > Import objects).

    Each feature: ``id`` (``feature_id`` of image and object), an edge-traced ``Polygon`` or
    ``MultiPolygon`` in pixel coordinates (module docstring), ``properties`` ``objectType``
    "detection", ``classification`` {``name``, ``color`` [r, g, b]}, ``object_id`` (the id in
    the label image) and ``measurements`` (the object's row of ``table``: name -> number, the
    names of the objects CSV). An object in a hole of another of another class
    (``enclosed_objects``) rides with it as a QuPath cell: ``objectType`` "cell", the geometry
    the cell with its nucleus, ``nucleusGeometry`` the nucleus, ``nucleus_object_id`` and the
    nucleus's measurements prefixed ``nucleus_``; it has no feature of its own.

    Args:
        labels: (H, W) integer ids, 0 = background.
        classes: object id -> class index; None = every object is class 1.
        class_names: names by class index.
        palette: colour per class index; default (and beyond it): the VOC colour map.
        image_name: the image's file name: feature ids differ between images.
        table: ``object_table`` rows of these labels; None = no measurements.

    Returns:
        The FeatureCollection, features by object id.
    """
    import shapely

    from ..palette import make_palette

    labels = _check_labels(labels)
    geometries = object_geometries(labels)
    used = {i: _class_of(i, classes) for i in geometries}
    colours = make_palette(max([len(class_names), *(c + 1 for c in used.values())]))
    for cls, colour in enumerate([] if palette is None else palette):
        colours[cls] = [int(v) for v in colour[:3]]
    nuclei = enclosed_objects(labels, classes)
    nucleus_of = {cell: nucleus for nucleus, cell in nuclei.items()}
    rows = {int(row["id"]): row for row in table or []}
    features = []
    for object_id, geometry in geometries.items():
        if object_id in nuclei:
            continue
        cls = used[object_id]
        feature: dict[str, Any] = {"type": "Feature", "id": feature_id(object_id, image_name)}
        properties: dict[str, Any] = {
            "objectType": "detection",
            "classification": {"name": _name(cls, class_names), "color": colours[max(cls, 0)]},
            "object_id": object_id,
        }
        measurements = _measurements(rows[object_id]) if object_id in rows else {}
        nucleus = nucleus_of.get(object_id)
        if nucleus is not None:
            whole = shapely.union(geometry, geometries[nucleus])
            geometry = shapely.orient_polygons(shapely.simplify(whole, 0), exterior_cw=False)
            feature["nucleusGeometry"] = geometry_json(geometries[nucleus])
            properties["objectType"] = "cell"
            properties["nucleus_object_id"] = nucleus
            if nucleus in rows:
                measurements |= _measurements(rows[nucleus], "nucleus_")
        feature["geometry"] = geometry_json(geometry)
        if measurements:
            properties["measurements"] = measurements
        feature["properties"] = properties
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def _rle(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[int]:
    """COCO run lengths (column-major, background first) of one object's crop."""
    cols, rows = np.nonzero(crop.T)  # column-major order
    index = (cols + x0).astype(np.int64) * height + rows + y0
    breaks = np.nonzero(np.diff(index) != 1)[0]
    starts = np.concatenate([index[:1], index[breaks + 1]])
    ends = np.concatenate([index[breaks] + 1, index[-1:] + 1])
    counts = np.empty(2 * len(starts) + 1, np.int64)
    counts[0] = starts[0]
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[1::2] = ends - starts
    counts[-1] = height * width - ends[-1]
    return counts.tolist()


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of run lengths (pycocotools' ``rleToString``)."""
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return "".join(chars)


def coco_document(
    entries: list[tuple[str, int, int, np.ndarray, dict[int, int] | None]],
    class_names: list[str],
    segmentation: str = "rle",
    scores: Sequence[dict[int, float] | None] | None = None,
) -> dict:
    """Objects of a folder of images as COCO instance segmentation, usable both as a data set
    and as a results file (``COCO.loadRes``, ``COCOeval``).

    Categories are the classes 1..K-1 (``id`` = class index); each object is one annotation:
    ``segmentation`` either compressed RLE (``{"size": [h, w], "counts": str}``, exact, holes
    included; the default) or edge-traced polygons, one ``[x0, y0, x1, y1, ...]`` per piece
    (exact for objects without holes; a hole is filled, as COCO polygons have none);
    ``area`` = the pixels the segmentation encodes (pycocotools' ``area``), ``bbox``
    ``[x, y, w, h]`` from its pixels, ``iscrowd`` 0, ``score`` (the object's score, else 1.0)
    and ``object_id`` (the id in the label image). Objects of class 0 (background only under
    them) or of a class beyond ``class_names`` have no category and are left out.

    Args:
        entries: per image ``(file_name, height, width, labels, classes)``; ``classes`` None =
            every object is class 1.
        class_names: names by class index (0 = background).
        segmentation: "rle" or "polygon".
        scores: per entry, object id -> score (e.g. its mean object probability); None, or an
            id missing, = 1.0.

    Returns:
        ``{"images", "annotations", "categories"}``; image and annotation ids from 1.

    Raises:
        UnetkitError: labels whose size is not the entry's height and width, or an unknown
            segmentation.
    """
    if segmentation not in COCO_SEGMENTATIONS:
        raise UnetkitError(
            f"COCO segmentation must be one of {', '.join(COCO_SEGMENTATIONS)}; got "
            f"{segmentation!r}"
        )
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories = [{"id": c, "name": class_names[c]} for c in range(1, len(class_names))]
    for index, (file_name, height, width, labels, classes) in enumerate(entries):
        image_id = index + 1
        labels = _check_labels(labels)
        height, width = int(height), int(width)
        if labels.shape != (height, width):
            raise UnetkitError(
                f"{file_name}: labels {labels.shape} are not the image size ({height}, {width})"
            )
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        image_scores = (scores[index] if scores is not None else None) or {}
        geometries = object_geometries(labels) if segmentation == "polygon" else {}
        areas = np.bincount(labels.ravel()) if labels.size else np.zeros(1, np.int64)
        for object_id, (rows, cols) in _crops(labels):
            cls = _class_of(object_id, classes)
            if not 1 <= cls < len(class_names):
                continue
            y0, x0 = rows.start, cols.start
            area = int(areas[object_id])
            segment: Any
            if segmentation == "rle":
                crop = labels[rows, cols] == object_id
                counts = _rle(crop, y0, x0, height, width)
                segment = {"size": [height, width], "counts": rle_string(counts)}
            else:
                segment, area = _coco_polygons(geometries[object_id])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls,
                    "segmentation": segment,
                    "area": area,
                    "bbox": [x0, y0, cols.stop - x0, rows.stop - y0],
                    "iscrowd": 0,
                    "score": float(image_scores.get(object_id, 1.0)),
                    "object_id": object_id,
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_polygons(geometry: Any) -> tuple[list[list[int]], int]:
    """COCO polygons (the exteriors of an edge geometry) and the area they enclose."""
    import shapely

    polygons = _polygons(geometry)
    flat = [[v for xy in _ring(p.exterior)[:-1] for v in xy] for p in polygons]
    filled = shapely.union_all([shapely.Polygon(p.exterior) for p in polygons])
    return flat, int(round(filled.area))
