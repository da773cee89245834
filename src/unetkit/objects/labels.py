"""Objects from class masks: connected components, and each object's class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def connected_objects(mask: np.ndarray, background: int = 0, ignore_index: int = 255) -> np.ndarray:
    """Objects of a class mask: the 4-connected components of each class other than
    ``background`` and ``ignore_index``, numbered 1..N in raster order of their first pixel
    (ids unique across classes).

    Returns:
        (H, W) int32 ids, 0 = background.
    """
    mask = np.asarray(mask)
    labels = np.zeros(mask.shape, np.int32)
    count = 0
    for cls in np.unique(mask):
        if cls in (background, ignore_index):
            continue
        comp, n = ndimage.label(mask == cls)
        labels[comp > 0] = comp[comp > 0] + count
        count += n
    return renumber(labels)


def regions_of(mask: np.ndarray, boundary: int, ignore_index: int = 255) -> np.ndarray:
    """The regions that class ``boundary`` separates in a class mask (cells between
    membranes): the 4-connected components of the pixels of every other class; ``boundary``
    and ``ignore_index`` pixels are 0. Ids 1..N in raster order."""
    inside = (np.asarray(mask) != boundary) & (np.asarray(mask) != ignore_index)
    labels, _ = ndimage.label(inside, structure=ndimage.generate_binary_structure(2, 1))
    return labels.astype(np.int32)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in raster order of each object's first pixel (0 stays 0): one canonical
    numbering, so equal segmentations give equal label images."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    # the first pixel of each id is the start of its first run along the raster: sorting the
    # runs' ids (far fewer than the pixels) keeps the whole linear in pixels
    starts = np.ones(flat.size, bool)
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    ids, first = np.unique(flat[starts], return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first, kind="stable")]
    lut_size = int(flat.max()) + 1 if flat.size else 1
    lut = np.zeros(lut_size, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels]


def object_classes(labels: np.ndarray, mask: np.ndarray, num_classes: int) -> dict[int, int]:
    """Each object's class: the most frequent class of ``mask`` under it (ties: the lower
    class; background counts only when nothing else is under the object)."""
    labels = np.asarray(labels).ravel()
    mask = np.asarray(mask).ravel().astype(np.int64)
    inside = labels > 0
    if not inside.any():
        return {}
    ids, cls = labels[inside].astype(np.int64), np.clip(mask[inside], 0, num_classes)
    width = num_classes + 1
    table = np.bincount(ids * width + cls, minlength=(int(ids.max()) + 1) * width)
    table = table.reshape(-1, width)
    present = np.flatnonzero(table.sum(1))
    result = {}
    for i in present:
        row = table[i, 1:num_classes]
        result[int(i)] = int(np.argmax(row)) + 1 if row.sum() else 0
    return result
