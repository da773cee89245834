"""Training targets that separate touching objects, built from instance labels.

``--task instance`` trains a softmax over the data's K classes plus one more, ``boundary``:
the object pixels within ``width`` pixels (chessboard distance) of a pixel of another object
or of the background. Touching objects are then apart in the ``interior`` of the prediction
and a seeded watershed (``unetkit.objects.postprocess``) gives each its own id — the approach
of the DSB 2018 "contour-aware" entries and of the U-Net paper's separation of touching cells,
here with the boundary as an explicit class. The paper's weight map is computed from the real
instances (:func:`instance_weight_map`), so its border term sits on the pixels between two
objects, whether they are background gaps or boundary pixels of touching objects.

``--instance-head distance`` keeps the softmax over the data's K classes alone and adds one
channel: each object pixel's normalised distance to its object's edge
(:func:`object_distance`, the object probability of StarDist), from whose maxima a watershed
separates touching objects.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from ..errors import UnetkitError

# an object keeps at least this share of its pixels as interior: a wide boundary on a small
# object narrows (down to 1 px) rather than eat the interior its watershed seed comes from
MIN_INTERIOR = 0.25


def _edges_at(ids: np.ndarray, labels: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    # cv2's default border for dilate / erode never changes the result (-inf / +inf padding)
    high = cv2.dilate(ids, kernel)
    low = cv2.erode(ids, kernel)
    return (labels > 0) & ((high != ids) | (low != ids))


def object_edges(instances: np.ndarray, width: int = 1, fraction: float = 0.0) -> np.ndarray:
    """Object pixels within ``width`` px (3x3, 5x5, ... neighbourhood) of a pixel with
    another id (another object or background). The image border is not an edge: an object cut
    by the border keeps its interior there (tiles and crops see the same target).

    ``fraction`` > 0 widens the edge in proportion to each object's size: it also covers the
    object's pixels whose Euclidean distance to its 1 px edge is under ``fraction`` times the
    largest such distance in the object (its inner radius), so the interior left is the
    object's core (about the inner half of the radius at 0.5), and the cores of touching
    objects lie apart by about their radii rather than by ``2 * width`` px. The pixel at the
    inner radius always stays interior (``fraction`` < 1).

    An object that would keep under a quarter of its pixels (``MIN_INTERIOR``) as interior
    at ``width`` gets the widest narrower edge that leaves it a quarter (1 px at least), so
    small touching objects keep a seed each instead of becoming all boundary.

    Returns:
        (H, W) bool.
    """
    if width < 1:
        raise UnetkitError(f"boundary width must be >= 1; got {width}")
    if not 0.0 <= fraction < 1.0:
        raise UnetkitError(f"boundary fraction must be in [0, 1); got {fraction}")
    labels = np.asarray(instances)
    if labels.size and int(labels.max()) >= 2**24:
        raise UnetkitError("more than 16.7 M objects in one image")
    ids = labels.astype(np.float32)  # exact up to 2**24
    edges = _width_edges(ids, labels, width)
    if fraction > 0 and edges.any():
        edge1 = edges if width == 1 else _edges_at(ids, labels, 1)
        edges = edges | _core_rim(labels, edge1, fraction)
    return edges


def _width_edges(ids: np.ndarray, labels: np.ndarray, width: int) -> np.ndarray:
    """``width`` px edges, narrowed on the objects they would leave under ``MIN_INTERIOR``."""
    edges = _edges_at(ids, labels, width)
    if width == 1 or not edges.any():
        return edges
    flat = labels.ravel().astype(np.int64)
    area = np.bincount(flat)
    # only a thin object's own edge pixels change, so an object that kept its quarter at one
    # width keeps it: each round narrows just the objects still thin
    for narrower in range(width - 1, 0, -1):
        inner = np.bincount(flat, ~edges.ravel(), minlength=area.size)
        thin = inner < MIN_INTERIOR * area
        thin[0] = False
        if not thin.any():
            break
        edges = np.where(thin[labels], _edges_at(ids, labels, narrower), edges)
    return edges


def _core_rim(labels: np.ndarray, edge1: np.ndarray, fraction: float) -> np.ndarray:
    """Object pixels closer to their object's 1 px edge than ``fraction`` of its inner radius."""
    inner = (labels > 0) & ~edge1
    dist = ndimage.distance_transform_edt(inner)  # 0 on edge and background pixels
    radius = np.zeros(int(labels.max()) + 1)
    radius[1:] = ndimage.maximum(dist, labels, index=np.arange(1, radius.size))
    return inner & (dist < fraction * radius[labels])


def object_distance(instances: np.ndarray) -> np.ndarray:
    """Each object pixel's Euclidean distance to the nearest pixel outside its object (another
    object or background), divided by the largest such distance in its object.

    Values lie in (0, 1] on object pixels, with 1 at each object's innermost pixel(s), and are
    0 on background. Where two objects touch, both sides fall to their smallest values (1 px
    from the other object), so the map has a valley between touching objects however their
    sizes differ: every object peaks at 1. The normalisation makes the map unchanged by a
    change of scale (a resized image, a zoomed crop). The image border is not an edge, as in
    :func:`object_edges`: an object cut by the border keeps rising towards it.

    Each object is measured in its bounding box grown by 1 px, so the cost is the sum of the
    boxes' areas.

    Returns:
        (H, W) float32.
    """
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise UnetkitError(f"instances must be (H, W); got {labels.shape}")
    out = np.zeros(labels.shape, np.float32)
    if not labels.size or int(labels.max()) == 0:
        return out
    height, width = labels.shape
    ids = labels if labels.dtype.kind in "iu" and labels.itemsize <= 4 else labels.astype(np.int64)
    for index, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        rows, cols = box
        window = (
            slice(max(rows.start - 1, 0), min(rows.stop + 1, height)),
            slice(max(cols.start - 1, 0), min(cols.stop + 1, width)),
        )
        inside = ids[window] == index
        if inside.all():  # the object fills the image: no edge to measure from
            out[window][inside] = 1.0
            continue
        dist = ndimage.distance_transform_edt(inside)
        out[window][inside] = (dist[inside] / dist.max()).astype(np.float32)
    return out


def two_nearest_distances(
    labels: np.ndarray, count: int, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2 (H, W): Euclidean distances to the nearest and second-nearest object.

    Exact wherever both are <= ``reach``; elsewhere they may be inf or overestimates. Each object
    only updates the window of its bounding box grown by ``reach``, so the cost is the sum of
    the window areas rather than count x H x W.
    """
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    margin = math.ceil(reach)
    height, width = labels.shape
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = box
        window = (
            slice(max(rows.start - margin, 0), min(rows.stop + margin, height)),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, width)),
        )
        # Every pixel of object `index` lies in the window, so the EDT there is exact.
        dist = ndimage.distance_transform_edt(labels[window] != index)
        near, second = d1[window], d2[window]
        second[...] = np.minimum(second, np.maximum(near, dist))
        near[...] = np.minimum(near, dist)
    return d1, d2


def boundary_target(
    mask: np.ndarray,
    instances: np.ndarray,
    boundary_class: int,
    width: int = 1,
    ignore_index: int = 255,
    fraction: float = 0.0,
) -> np.ndarray:
    """The class mask with each object's edge (:func:`object_edges`) set to ``boundary_class``.

    Ignored pixels stay ignored; object pixels on background in ``mask`` (an annotation
    inconsistency) are left as the mask says.

    Returns:
        (H, W) int64 target.
    """
    mask = np.asarray(mask)
    if mask.shape != np.asarray(instances).shape:
        raise UnetkitError(
            f"instances are {instances.shape[0]}x{instances.shape[1]} but the mask is "
            f"{mask.shape[0]}x{mask.shape[1]}"
        )
    target = mask.astype(np.int64, copy=True)
    edge = object_edges(instances, width, fraction) & (mask != ignore_index) & (mask != 0)
    target[edge] = boundary_class
    return target


def instance_weight_map(
    target: np.ndarray,
    instances: np.ndarray,
    boundary_class: int,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    ignore_index: int = 255,
) -> np.ndarray:
    """The U-Net paper's weight map (Ronneberger et al. 2015, eq. 2) from real instances.

    ``w(x) = 1 + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on background and boundary pixels, 1 on
    interior pixels and 0 on ignored ones; d1, d2 are the Euclidean distances to the nearest
    and second-nearest object (0 inside an object, so a boundary pixel of an object touching
    another gets about ``w0``, one of an isolated object about 0). Only with >= 2 objects.

    Returns:
        float32 (H, W).
    """
    target = np.asarray(target)
    labels = np.asarray(instances).astype(np.int32)
    valid = target != ignore_index
    weights = np.ones(target.shape, np.float64)
    count = int(labels.max()) if labels.size else 0
    if count >= 2 and w0 > 0:
        reach = sigma * math.sqrt(2 * math.log(max(w0 / 1e-6, 1.0)))
        d1, d2 = two_nearest_distances(labels, count, reach)
        between = valid & ((labels == 0) | (target == boundary_class))
        total = d1[between] + d2[between]
        weights[between] += w0 * np.exp(-(total**2) / (2 * sigma**2))
    weights[~valid] = 0.0
    return weights.astype(np.float32)
