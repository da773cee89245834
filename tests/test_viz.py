"""Palettes, colour masks, overlays with contours and legends, panels and figures."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.viz import colorize, make_palette, overlay, panel

PALETTE = [[0, 0, 0], [200, 0, 0], [0, 0, 200]]


def test_voc_palette():
    # PASCAL VOC colour map, as in the VOC devkit and labelme
    assert make_palette(9) == [
        [0, 0, 0],
        [128, 0, 0],
        [0, 128, 0],
        [128, 128, 0],
        [0, 0, 128],
        [128, 0, 128],
        [0, 128, 128],
        [128, 128, 128],
        [64, 0, 0],
    ]
    assert make_palette(256)[255] == [224, 224, 192]  # the VOC "void" colour


def test_colorize_ignore_white_and_palette_extension():
    mask = np.array([[0, 1], [255, 3]])
    rgb = colorize(mask, PALETTE[:2])
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [200, 0, 0]
    assert rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[1, 1].tolist() == [128, 128, 0]  # beyond the palette: VOC colour of class 3


def _scene():
    image = np.full((40, 50, 3), 100, np.uint8)
    mask = np.zeros((40, 50), np.int64)
    mask[5:25, 5:25] = 1  # 400 px
    mask[30:32, 40:42] = 2  # 4 px
    return image, mask


def test_overlay_blends_classes_and_leaves_background():
    image, mask = _scene()
    out = overlay(image, mask, PALETTE, alpha=0.5, contours=False, legend=False)
    assert out.shape == (40, 50, 3)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[10, 10].tolist() == [150, 50, 50]  # round(0.5 * 100 + 0.5 * (200, 0, 0))
    assert out[31, 41].tolist() == [50, 50, 150]


def test_overlay_contours_skip_small_regions():
    image, mask = _scene()
    out = overlay(image, mask, PALETTE, alpha=0.0, min_area=10, legend=False)
    assert out[5, 15].tolist() == [200, 64, 64]  # border of the big square: outline colour
    assert out[15, 15].tolist() == [100, 100, 100]  # inside (alpha 0): untouched
    assert out[30, 40].tolist() == [100, 100, 100]  # 4 px region under min_area: no outline
    drawn = overlay(image, mask, PALETTE, alpha=0.0, min_area=0, legend=False)
    assert drawn[30, 40].tolist() != [100, 100, 100]


def test_overlay_legend_strip():
    image, mask = _scene()
    mask[0, 0] = 255
    out = overlay(image, mask, PALETTE, class_names=["bg", "cell", "nucleus"], legend=True)
    assert out.shape[0] == 40 and out.shape[1] > 50
    legend = out[:, 50:]
    for colour in ([200, 0, 0], [0, 0, 200], [255, 255, 255]):  # swatches incl. "ignore"
        assert (legend == colour).all(axis=2).any()
    assert overlay(image, mask, PALETTE).shape == (40, 50, 3)  # the image's size by default


def test_overlay_legend_lists_only_the_classes_present():
    image, mask = _scene()
    mask[mask == 2] = 0  # no nucleus left
    names = ["bg", "cell", "nucleus", "absent-3", "absent-4"]
    palette = [*PALETTE, (0, 250, 0), (250, 0, 250)]
    out = overlay(image, mask, palette, class_names=names, legend=True)
    legend = out[:, 50:]
    assert (legend == [200, 0, 0]).all(axis=2).any()  # cell: present
    for colour in ([0, 0, 200], [0, 250, 0], [250, 0, 250]):  # absent classes: no swatch
        assert not (legend == colour).all(axis=2).any()


def test_panel_pads_and_converts():
    grey = np.zeros((10, 8), np.uint8)
    rgb = np.full((14, 6, 3), 255, np.uint8)
    out = panel([grey, rgb], ["a", "b"])
    assert out.dtype == np.uint8
    assert out.shape == (22 + 14, 8 + 4 + 6, 3)  # title bar, tallest tile; 4 px gap
    assert out[22 + 12, 0].tolist() == [0, 0, 0]  # grey tile padded below
    assert out[22 + 13, 17].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        panel([grey, rgb], ["a"])


def test_overlay_accepts_non_contiguous_float_images():
    chw = np.random.default_rng(0).random((3, 20, 24), dtype=np.float32)
    mask = np.zeros((20, 24), np.int64)
    mask[4:12, 5:15] = 1
    out = overlay(chw.transpose(1, 2, 0), mask, make_palette(2), legend=False)
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8
    assert (out[8, 10] != np.rint(chw[:, 8, 10] * 255)).any()  # the region is painted


def _objects_scene():
    image = np.full((30, 40, 3), 90, np.uint8)
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2  # touches object 1 along x = 15
    labels[20:28, 30:38] = 3_000_000  # ids up to millions
    return image, labels


def test_object_overlay_colours_boundaries_and_background():
    from unetkit.viz import object_overlay

    image, labels = _objects_scene()
    out = object_overlay(image, labels)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert (out[labels == 0] == 90).all()  # background untouched
    inner_1, inner_2 = out[10, 9], out[10, 20]
    assert inner_1.tolist() != inner_2.tolist()  # touching objects: different colours
    assert (inner_1 != 90).any() and (out[24, 34] != 90).any()
    yellow = [255, 255, 0]
    assert out[10, 14].tolist() == yellow and out[10, 15].tolist() == yellow  # line between
    assert out[5, 10].tolist() == yellow and out[20, 34].tolist() == yellow  # outer outlines
    assert out[10, 10].tolist() != yellow
    assert (object_overlay(image, labels) == out).all()  # deterministic
    grey = image[:, :, 0].astype(np.float32) / 255
    blue = object_overlay(grey, labels, contour_colour=(0, 0, 255))
    assert blue.shape == (30, 40, 3) and blue[10, 15].tolist() == [0, 0, 255]


def test_object_colours_bright_distinct_and_stable():
    from unetkit.viz import object_colours

    colours = object_colours(np.arange(1, 5000))
    assert colours.shape == (4999, 3) and colours.dtype == np.uint8
    assert (colours.max(axis=1) >= 200).all()  # never dark
    assert len({tuple(c) for c in colours[:100].tolist()}) == 100
    steps = np.abs(colours[1:].astype(int) - colours[:-1]).sum(axis=1)
    assert steps.min() > 60  # consecutive ids look different
    # a colour depends on its id only, not on the other ids asked for
    assert object_colours(np.array([7, 3_000_000]))[0].tolist() == colours[6].tolist()


def test_object_overlay_sparse_huge_ids_thin_objects_and_errors():
    from unetkit.errors import UnetkitError
    from unetkit.viz import object_overlay

    image = np.zeros((4, 4), np.uint8)
    labels = np.zeros((4, 4), np.int64)
    labels[1:3, 1:3] = 2**40  # far beyond a colour table
    out = object_overlay(image, labels, alpha=1.0, contour_colour=(1, 2, 3))
    assert (out[labels == 0] == 0).all() and out[1, 1].tolist() == [1, 2, 3]
    assert (object_overlay(image, np.zeros((4, 4), np.int32)) == 0).all()
    line = np.zeros((3, 5), np.int32)
    line[1, 1:4] = 5
    out = object_overlay(np.zeros((3, 5), np.uint8), line, alpha=1.0)
    assert (out[1, 1:4] == [255, 255, 0]).all()  # a 1-pixel-wide object is all outline
    with pytest.raises(UnetkitError, match="differ in size"):
        object_overlay(np.zeros((4, 5), np.uint8), labels)
    with pytest.raises(UnetkitError, match="integers"):
        object_overlay(image, labels.astype(np.float32))
