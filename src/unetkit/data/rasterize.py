"""Paint labelme shapes into a class-index mask and an instance label image.

Fill rules follow labelme's ``utils.shape_to_mask`` (PIL ``ImageDraw`` with ``outline`` and
``fill`` set): polygon / oriented_rectangle filled polygons; rectangle a filled box between its two
corners (any order); circle a filled ellipse with radius = distance(centre, edge point);
line / linestrip strokes of width 10; point a filled disc of radius 5; mask a boolean patch
pasted at ``[y1:y2 + 1, x1:x2 + 1]``. Circles of radius over ``PIL_MAX_RADIUS`` keep
d <= r + 0.5 (numpy; within a pixel of PIL's rule). Shapes are painted in file order, later
over earlier, as in labelme's ``shapes_to_label``.

Objects (:func:`rasterize_objects`) follow labelme's own instance export (``shapes_to_label``
keys each instance by ``(label, group_id)``, a missing ``group_id`` making a shape its own
instance): every shape is one object, except that shapes sharing a ``group_id`` (not null) and
a label are one object. Shapes of the background (0) and ignore (255) classes are no objects.
The paint order is the class mask's, so the two always agree: an object's pixels are those its
shapes win, all of its class, and every pixel of an object class belongs to an object.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .labelme import IGNORE_VALUE, Shape

LINE_WIDTH = 10  # labelme shape_to_mask(line_width=10)
POINT_SIZE = 5  # labelme shape_to_mask(point_size=5): disc radius
# PIL's ellipse overflows int64 above this radius (wrong, or ~20 s per circle); numpy beyond
PIL_MAX_RADIUS = 16384


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, value: int) -> None:
    xy = [(float(x), float(y)) for x, y in shape.points]
    kind = shape.shape_type
    if kind == "circle":
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=value, fill=value)
    elif kind == "rectangle":
        (x1, y1), (x2, y2) = xy
        box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]  # any corner order
        draw.rectangle(box, outline=value, fill=value)
    elif kind in ("line", "linestrip"):
        draw.line(xy, fill=value, width=LINE_WIDTH)
    elif kind == "point":
        (cx, cy), r = xy[0], POINT_SIZE
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=value, fill=value)
    else:  # polygon, oriented_rectangle
        draw.polygon(xy, outline=value, fill=value)


def _circle(shape: Shape) -> tuple[float, float, float]:
    (cx, cy), (px, py) = shape.points
    return float(cx), float(cy), math.hypot(cx - px, cy - py)


def _is_big_circle(shape: Shape) -> bool:
    return shape.shape_type == "circle" and _circle(shape)[2] > PIL_MAX_RADIUS


def _paint_big_circle(canvas: np.ndarray, shape: Shape, value: int) -> None:
    cx, cy, r = _circle(shape)
    rows = (np.arange(canvas.shape[0]) - cy) ** 2
    cols = (np.arange(canvas.shape[1]) - cx) ** 2
    canvas[rows[:, None] + cols[None, :] <= (r + 0.5) ** 2] = value


def _paste_patch(canvas: np.ndarray, shape: Shape, value: int) -> None:
    (x1, y1), _ = shape.points.astype(int)
    patch = shape.mask
    assert patch is not None
    h, w = canvas.shape
    top, left = max(y1, 0), max(x1, 0)
    bottom, right = min(y1 + patch.shape[0], h), min(x1 + patch.shape[1], w)
    if bottom > top and right > left:
        region = canvas[top:bottom, left:right]
        region[patch[top - y1 : bottom - y1, left - x1 : right - x1]] = value


def shape_mask(shape: Shape, size: tuple[int, int]) -> np.ndarray:
    """One shape as a boolean (H, W) mask (labelme's ``shape_to_mask``)."""
    return rasterize([shape], size, {shape.label: 1}) == 1


def paints_nothing(shape: Shape, size: tuple[int, int]) -> bool:
    """Whether ``shape`` covers no pixel of an image of ``size`` (outside it, or empty).

    Cheap for the usual case: a vertex inside the image is always painted (outlines, strokes
    and discs pass through their points); otherwise the shape is rasterised alone.
    """
    height, width = size
    if shape.shape_type == "mask":
        (x1, y1), _ = shape.points.astype(int)
        assert shape.mask is not None
        crop = shape.mask[max(-y1, 0) : max(height - y1, 0), max(-x1, 0) : max(width - x1, 0)]
        return not crop.any()
    xs, ys = shape.points[:, 0], shape.points[:, 1]
    inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    if inside.any() and shape.shape_type != "circle":  # a zero-radius circle paints nothing
        return False
    return not shape_mask(shape, size).any()


def _paint(shapes: list[Shape], size: tuple[int, int], fills: list[int], mode: str) -> np.ndarray:
    """Paint ``shapes[i]`` with ``fills[i]`` in order (later over earlier) on a PIL ``mode``
    canvas (``L``: 8-bit, ``I``: 32-bit; the same pixels either way)."""
    height, width = size
    canvas = Image.new(mode, (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape, value in zip(shapes, fills):
        if shape.shape_type == "mask" or _is_big_circle(shape):
            array = np.array(canvas)
            if shape.shape_type == "mask":
                _paste_patch(array, shape, value)
            else:
                _paint_big_circle(array, shape, value)
            canvas = Image.fromarray(array)
            draw = ImageDraw.Draw(canvas)
        else:
            _draw(draw, shape, value)
    return np.array(canvas)


def rasterize(shapes: list[Shape], size: tuple[int, int], values: dict[str, int]) -> np.ndarray:
    """Paint shapes in order (later over earlier) into a class-index mask.

    Args:
        shapes: validated shapes.
        size: (height, width).
        values: label -> class index (0..255; ``__ignore__`` -> 255).

    Returns:
        (H, W) uint8 class indices (0 where no shape).

    Raises:
        KeyError: a label missing from ``values`` (callers check labels first).
    """
    return _paint(shapes, size, [values[shape.label] for shape in shapes], "L")


def is_object_class(value: int) -> bool:
    """Whether shapes of class index ``value`` are objects (not background 0, not ignore 255)."""
    return value not in (0, IGNORE_VALUE)


def shape_objects(shapes: list[Shape], values: dict[str, int]) -> list[int]:
    """The object number of each shape (labelme's instance rule), before painting.

    Each shape of an object class is a new object, except that shapes with the same
    ``group_id`` (not None) and the same label share the object of the first of them. Objects
    are numbered 1, 2, ... in the order of their first shape; shapes of the background and
    ignore classes get 0.

    Args:
        shapes: validated shapes, in file order.
        values: label -> class index (as for :func:`rasterize`).

    Returns:
        One object number per shape.

    Raises:
        KeyError: a label missing from ``values``.
    """
    numbers: dict[object, int] = {}
    result = []
    for i, shape in enumerate(shapes):
        if not is_object_class(values[shape.label]):
            result.append(0)
            continue
        key = ("group", shape.label, shape.group_id) if shape.group_id is not None else i
        result.append(numbers.setdefault(key, len(numbers) + 1))
    return result


def compact_ids(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids present to 1..N keeping their order (0 stays 0), e.g. after objects
    were painted over or cropped away: ``[0, 2, 5, 2] -> [0, 1, 2, 1]``.

    Returns:
        int32 ids of the same shape.
    """
    labels = np.asarray(labels)
    if not labels.size:
        return labels.astype(np.int32)
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels]


def rasterize_objects(
    shapes: list[Shape], size: tuple[int, int], values: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The class mask and the instance label image of a set of shapes, painted together.

    One pass records which shape wins each pixel (later over earlier); the class mask is that
    shape's class (the same array as :func:`rasterize`) and the instance image its object
    (:func:`shape_objects`), so an instance pixel always carries its object's class in the
    mask, and a mask pixel of an object class always belongs to an object. Objects that win
    no pixel (painted over, outside the image) are dropped and the rest renumbered 1..N in
    the order of their first shape.

    Args:
        shapes: validated shapes.
        size: (height, width).
        values: label -> class index (0..255; ``__ignore__`` -> 255).

    Returns:
        (mask, instances): (H, W) uint8 class indices and (H, W) int32 object ids
        (0 = no object).

    Raises:
        KeyError: a label missing from ``values`` (callers check labels first).
    """
    classes = np.array([0, *(values[shape.label] for shape in shapes)], np.uint8)
    objects = np.array([0, *shape_objects(shapes, values)], np.int32)
    winners = _paint(shapes, size, list(range(1, len(shapes) + 1)), "I")
    return classes[winners], compact_ids(objects[winners])
