"""labelme JSON: every shape type's fill rule with hand-computed pixels, paint order, ignore
regions, validation errors, image sources (imageData, imagePath, EXIF), shapes as objects
(labelme's group_id rule, overlaps, mask / instance agreement) and a property test."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from unetkit.data.labelme import (
    class_values,
    load_image,
    load_labelme,
    parse_shape,
    read_label_list,
)
from unetkit.data.rasterize import compact_ids, rasterize, rasterize_objects, shape_objects
from unetkit.errors import UnetkitError

H, W = 16, 28
YY, XX = np.mgrid[:H, :W]


VALUES = {"a": 1, "b": 2, "__ignore__": 255, "_background_": 0}


def paint(*shapes: dict, size=(H, W)) -> np.ndarray:
    parsed = [parse_shape(s, i) for i, s in enumerate(shapes)]
    return rasterize(parsed, size, VALUES)


def objects(*shapes: dict, size=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    parsed = [parse_shape(s, i) for i, s in enumerate(shapes)]
    return rasterize_objects(parsed, size, VALUES)


def assert_consistent(mask: np.ndarray, instances: np.ndarray) -> None:
    """Each object has one class, never background / ignore; every object-class pixel has one."""
    for i in range(1, int(instances.max()) + 1):
        under = np.unique(mask[instances == i])
        assert len(under) == 1 and under[0] not in (0, 255), (i, under)
    np.testing.assert_array_equal(instances > 0, (mask != 0) & (mask != 255))


def box(top, bottom, left, right) -> np.ndarray:
    """Inclusive pixel box as a boolean (H, W) mask."""
    rows = np.arange(H)[:, None]
    cols = np.arange(W)[None, :]
    return ((rows >= top) & (rows <= bottom)) & ((cols >= left) & (cols <= right))


def shape(kind: str, points, label: str = "a", **extra) -> dict:
    return {"label": label, "shape_type": kind, "points": points, **extra}


# Fill rules (labelme's shape_to_mask: PIL ImageDraw with outline and fill; pixel (x, y) is
# column x, row y). Each expectation is written from the geometry, not from PIL.
FILL_RULES = [
    ("polygon", [[1, 1], [5, 1], [5, 4], [1, 4]], box(1, 4, 1, 5)),
    ("rectangle", [[1, 1], [5, 4]], box(1, 4, 1, 5)),
    ("rectangle", [[5, 4], [1, 1]], box(1, 4, 1, 5)),  # corners in any order
    ("rectangle", [[1, 4], [5, 1]], box(1, 4, 1, 5)),
    # circle: centre (10, 10), edge point 3 px away; PIL's ellipse keeps d^2 <= r^2 + 1
    ("circle", [[10, 10], [13, 10]], (XX - 10) ** 2 + (YY - 10) ** 2 <= 10),
    # line width 10 around y = 10: rows 6..15, no end caps
    ("line", [[2, 10], [20, 10]], box(6, 15, 2, 20)),
    # linestrip: the horizontal stroke plus the vertical one x = 15..24 from y = 2 to 10
    ("linestrip", [[2, 10], [20, 10], [20, 2]], box(6, 15, 2, 20) | box(2, 10, 15, 24)),
    # point: disc of radius 5 (rows 11, 11, ..., 9, 7, 5 px wide; d^2 <= 30)
    ("point", [[10, 8]], (XX - 10) ** 2 + (YY - 8) ** 2 <= 30),
    # oriented rectangle: a diamond |x - 10| + |y - 6| <= 4 including its outline
    ("oriented_rectangle", [[10, 2], [14, 6], [10, 10], [6, 6]], abs(XX - 10) + abs(YY - 6) <= 4),
]


@pytest.mark.parametrize(("kind", "points", "expected"), FILL_RULES)
def test_fill_rules(kind, points, expected):
    np.testing.assert_array_equal(paint(shape(kind, points)), expected.astype(np.uint8))


@pytest.mark.parametrize(("kind", "points", "expected"), FILL_RULES)
def test_objects_mask_is_the_class_mask(kind, points, expected):
    """The one-pass painting (32-bit canvas) fills exactly the pixels of the class mask."""
    mask, instances = objects(shape(kind, points, "b"))
    np.testing.assert_array_equal(mask, 2 * expected.astype(np.uint8))
    np.testing.assert_array_equal(instances, expected.astype(np.int32))
    assert mask.dtype == np.uint8 and instances.dtype == np.int32


def test_circle_radius_is_euclidean():
    """The edge point (13, 14) is 5 px from the centre (10, 10), not max(3, 4) = 4: the same
    disc as with the edge point (15, 10)."""
    diagonal = paint(shape("circle", [[10, 10], [13, 14]]))
    np.testing.assert_array_equal(diagonal, paint(shape("circle", [[10, 10], [15, 10]])))


def _b64_png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_mask_patch_pasted_at_its_box():
    patch = np.array([[1, 0, 1], [0, 1, 1]], bool)
    out = paint(shape("mask", [[2, 3], [4, 4]], mask=_b64_png(patch)))
    expected = np.zeros((H, W), np.uint8)
    expected[3:5, 2:5] = patch
    np.testing.assert_array_equal(out, expected)
    clipped = paint(shape("mask", [[26, 15], [28, 16]], mask=_b64_png(patch)))
    assert clipped[15, 26] == 1 and clipped[15, 27] == 0 and clipped.sum() == 1


def test_later_shapes_paint_over_earlier_and_ignore():
    first = shape("rectangle", [[0, 0], [9, 9]], "a")
    second = shape("rectangle", [[5, 5], [14, 14]], "b")
    out = paint(first, second)
    assert out[7, 7] == 2 and out[2, 2] == 1 and out[12, 12] == 2
    assert paint(second, first)[7, 7] == 1
    ignore = shape("rectangle", [[6, 6], [7, 7]], "__ignore__")
    out = paint(first, ignore)
    assert out[6, 6] == 255 and (out == 255).sum() == 4


def test_touching_shapes_of_one_class_are_two_objects():
    """Two polygons sharing an edge: one connected region of class a in the mask, two ids."""
    left = shape("polygon", [[1, 1], [5, 1], [5, 4], [1, 4]])  # rows 1..4, columns 1..5
    right = shape("polygon", [[6, 1], [9, 1], [9, 4], [6, 4]])  # columns 6..9: touching
    mask, instances = objects(left, right)
    np.testing.assert_array_equal(mask, box(1, 4, 1, 9).astype(np.uint8))
    expected = np.where(box(1, 4, 1, 5), 1, np.where(box(1, 4, 6, 9), 2, 0))
    np.testing.assert_array_equal(instances, expected)
    assert (instances[1:5, 5] == 1).all() and (instances[1:5, 6] == 2).all()


def test_shapes_sharing_group_id_and_label_are_one_object():
    """labelme's rule: the key is (label, group_id); null group ids never merge."""
    shapes = [
        shape("rectangle", [[0, 0], [2, 2]], group_id=7),  # a, group 7: object 1
        shape("rectangle", [[10, 0], [12, 2]], group_id=None),  # a, no group: object 2
        shape("rectangle", [[20, 0], [22, 2]], group_id=7.0),  # a, group 7 again: object 1
        shape("rectangle", [[0, 10], [2, 12]], "b", group_id=7),  # b, group 7: object 3
        shape("rectangle", [[10, 10], [12, 12]], group_id=None),  # a, no group: object 4
        shape("rectangle", [[20, 10], [22, 12]], "b", group_id=7),  # b, group 7: object 3
    ]
    parsed = [parse_shape(s, i) for i, s in enumerate(shapes)]
    assert [p.group_id for p in parsed] == [7, None, 7, 7, None, 7]
    assert shape_objects(parsed, VALUES) == [1, 2, 1, 3, 4, 3]
    mask, instances = objects(*shapes)
    assert instances.max() == 4
    assert (instances[box(0, 2, 0, 2)] == 1).all() and (instances[box(0, 2, 20, 22)] == 1).all()
    assert (instances[box(0, 2, 10, 12)] == 2).all() and (instances[box(10, 12, 10, 12)] == 4).all()
    assert (instances[box(10, 12, 0, 2)] == 3).all() and (instances[box(10, 12, 20, 22)] == 3).all()
    assert (instances > 0).sum() == 6 * 9
    assert_consistent(mask, instances)
    for bad in (True, [1], {"id": 1}, 1.5):
        with pytest.raises(ValueError, match="group_id must be an integer or null"):
            parse_shape(shape("rectangle", [[0, 0], [2, 2]], group_id=bad), 0)


def test_overlaps_later_wins_in_mask_and_instances_alike():
    patch = np.ones((2, 2), bool)
    shapes = [
        shape("rectangle", [[0, 0], [9, 9]], "a"),  # object 1, partly covered
        shape("rectangle", [[5, 5], [14, 14]], "b"),  # object 2 over object 1
        shape("rectangle", [[20, 0], [21, 1]], "a"),  # wholly covered below: dropped
        shape("mask", [[20, 0], [21, 1]], "b", mask=_b64_png(patch)),  # over it: object 3
        shape("rectangle", [[6, 6], [7, 7]], "__ignore__"),  # an ignore hole in object 2
        shape("rectangle", [[0, 0], [1, 1]], "_background_"),  # erases a corner of object 1
        shape("circle", [[20027, 7], [27, 7]], "a", group_id=3),  # numpy circle: column 27
    ]
    mask, instances = objects(*shapes)
    parsed = [parse_shape(s, i) for i, s in enumerate(shapes)]
    np.testing.assert_array_equal(mask, rasterize(parsed, (H, W), VALUES))
    assert shape_objects(parsed, VALUES) == [1, 2, 3, 4, 0, 0, 5]
    assert mask[2, 2] == 1 and instances[2, 2] == 1
    assert mask[8, 8] == 2 and instances[8, 8] == 2  # the later shape wins the overlap
    assert mask[6, 6] == 255 and instances[6, 6] == 0
    assert mask[0, 0] == 0 and instances[0, 0] == 0
    assert (instances[0:2, 20:22] == 3).all() and (mask[0:2, 20:22] == 2).all()
    assert (instances[:, 27] == 4).all() and (mask[:, 27] == 1).all()  # ids 1..4, no gap
    assert set(np.unique(instances)) == {0, 1, 2, 3, 4} and (instances[:, 26] != 4).all()
    assert_consistent(mask, instances)
    np.testing.assert_array_equal(objects(*shapes[:2])[1][5:10, 5:10], 2)
    np.testing.assert_array_equal(objects(shapes[1], shapes[0])[1][5:10, 5:10], 2)  # reversed


def test_compact_ids_keep_order():
    assert compact_ids(np.array([[0, 2, 5], [2, 9, 0]])).tolist() == [[0, 1, 2], [1, 3, 0]]
    assert compact_ids(np.zeros((2, 2), np.int32)).tolist() == [[0, 0], [0, 0]]
    mask, instances = objects(size=(3, 4))  # no shapes
    assert not mask.any() and not instances.any() and instances.shape == (3, 4)


def _write(tmp_path, doc: dict, name: str = "x.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_malformed_shapes_all_reported_with_index(tmp_path):
    doc = {
        "shapes": [
            shape("polygon", [[0, 0], [1, 1], [2, 0]]),
            shape("polygon", [[0, 0], [1, 1]]),
            shape("points", [[0, 0], [1, 1], [2, 2]]),
            shape("circle", [[0, 0], [float("nan"), 1]]),
            {"points": [[0, 0]], "shape_type": "point"},
            shape("mask", [[0, 0], [3, 3]], mask=_b64_png(np.ones((2, 2), bool))),
        ],
        "imagePath": "x.png",
    }
    with pytest.raises(UnetkitError) as info:
        load_labelme(_write(tmp_path, doc))
    message = str(info.value)
    assert "x.json" in message
    assert "shape 1: polygon needs at least 3 points, got 2" in message
    assert "shape 2: unsupported shape_type 'points'" in message
    assert "shape 3: points contain NaN" in message
    assert "shape 4: has no label" in message
    assert "shape 5: mask patch is 2x2 (HxW) but its box (0,0)-(3,3) is 4x4" in message
    assert "shape 0" not in message


def test_not_labelme_and_bad_json(tmp_path):
    with pytest.raises(UnetkitError, match="no 'shapes' list"):
        load_labelme(_write(tmp_path, {"foo": 1}))
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(UnetkitError, match="y.json: not a readable JSON"):
        load_labelme(tmp_path / "y.json")


def _rgb(h: int, w: int) -> np.ndarray:
    return (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)


def test_image_sources(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(_rgb(4, 6)).save(tmp_path / "sub" / "img.png")
    base = {"shapes": [], "imageHeight": 4, "imageWidth": 6}
    doc = load_labelme(_write(tmp_path, {**base, "imagePath": "sub\\img.png"}))  # Windows
    np.testing.assert_array_equal(load_image(doc, tmp_path), _rgb(4, 6))
    embedded = {**base, "imagePath": "gone.png", "imageData": _b64_png(_rgb(4, 6))}
    doc = load_labelme(_write(tmp_path, embedded))
    np.testing.assert_array_equal(load_image(doc, tmp_path), _rgb(4, 6))  # imageData wins
    doc = load_labelme(_write(tmp_path, {**base, "imagePath": "gone.png"}))
    with pytest.raises(UnetkitError, match="image 'gone.png' not found"):
        load_image(doc, tmp_path)
    wrong = load_labelme(_write(tmp_path, {**base, "imageHeight": 6, "imageWidth": 4,
                                           "imagePath": "sub/img.png"}))  # fmt: skip
    with pytest.raises(UnetkitError, match="imageHeight x imageWidth is 6x4 .* is 4x6"):
        load_image(wrong, tmp_path)


def test_image_outside_the_folder(tmp_path):
    inner = tmp_path / "lm"
    inner.mkdir()
    Image.fromarray(_rgb(4, 6)).save(tmp_path / "outside.png")
    doc = load_labelme(_write(inner, {"shapes": [], "imagePath": "../outside.png"}))
    with pytest.raises(UnetkitError, match="outside .*--allow-outside"):
        load_image(doc, inner)
    assert load_image(doc, inner, allow_outside=True).shape == (4, 6, 3)


def test_exif_rotated_image_matches_annotation(tmp_path):
    raw = np.zeros((4, 6), np.uint8)
    raw[0, 0] = 255  # top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 6x4, the bright pixel top-right
    Image.fromarray(raw).save(tmp_path / "cam.png", exif=exif.tobytes())
    doc = {"shapes": [shape("point", [[3, 0]])], "imagePath": "cam.png"}
    parsed = load_labelme(_write(tmp_path, {**doc, "imageHeight": 6, "imageWidth": 4}))
    image = load_image(parsed, tmp_path)
    assert image.shape == (6, 4, 1) and image[0, 3, 0] == 255
    raw_size = load_labelme(_write(tmp_path, {**doc, "imageHeight": 4, "imageWidth": 6}))
    with pytest.raises(UnetkitError, match="EXIF orientation applied"):
        load_image(raw_size, tmp_path)


def test_class_lists():
    classes, values = class_values(None, {"zebra", "ant", "__ignore__", "_background_"})
    assert classes == ["background", "ant", "zebra"]
    assert values["__ignore__"] == 255 and values["_background_"] == 0 and values["zebra"] == 2
    labels = ["__ignore__", "_background_", "cat", "dog"]
    classes, values = class_values(labels, set())
    assert classes == ["_background_", "cat", "dog"] and values["dog"] == 2
    assert class_values(["dog", "cat"], set())[0] == ["background", "dog", "cat"]
    assert read_label_list("a, b,c") == ["a", "b", "c"]
    with pytest.raises(UnetkitError, match="duplicate class names a"):
        read_label_list(["a", "b", "a"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-10, 50, allow_nan=False), st.floats(-10, 50, allow_nan=False)),
        min_size=3,
        max_size=8,
    )
)
def test_polygon_inside_clipped_bounding_box_and_deterministic(points):
    size = (40, 36)
    poly = {"label": "a", "shape_type": "polygon", "points": [list(p) for p in points]}
    mask = paint(poly, size=size)
    pts = np.asarray(points)
    ys, xs = np.nonzero(mask)
    if len(ys):
        assert xs.min() >= max(np.floor(pts[:, 0].min()), 0)
        assert xs.max() <= min(np.ceil(pts[:, 0].max()), size[1] - 1)
        assert ys.min() >= max(np.floor(pts[:, 1].min()), 0)
        assert ys.max() <= min(np.ceil(pts[:, 1].max()), size[0] - 1)
    np.testing.assert_array_equal(mask, paint(poly, size=size))
