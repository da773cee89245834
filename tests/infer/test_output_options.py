"""infer/options.py: what predict_paths writes, one frozen record checked when made."""

from __future__ import annotations

import dataclasses

import pytest

from unetkit.data.largeimage import PixelSize
from unetkit.errors import UnetkitError
from unetkit.infer.options import OutputOptions, given_pixel


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: given_pixel(0.0, "um"), "pixel size must be > 0; got 0.0"),
        (lambda: given_pixel(float("nan"), "um"), "pixel size must be > 0"),
        (
            lambda: given_pixel(1.0, "inch"),
            "pixel unit must be one of nm, um, mm, cm, m; got 'inch'",
        ),
        (lambda: given_pixel(None, "inch"), "got 'inch'"),  # a bad unit even without a size
        (
            lambda: OutputOptions(coco_format="mask"),
            "COCO format must be one of rle, polygon; got 'mask'",
        ),
        (
            lambda: OutputOptions(background="grey"),
            "background must be one of bright, dark; got 'grey'",
        ),
    ],
)
def test_a_bad_value_is_one_line_when_made(make, message):
    with pytest.raises(UnetkitError) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_given_pixel_is_square_in_its_normalised_unit():
    assert given_pixel(0.5, "micron") == PixelSize(0.5, 0.5, "um")
    assert given_pixel(None, "nm") is None


def test_a_per_image_copy_derives_its_size_and_the_folders_stays_as_it_was():
    folder = OutputOptions(objects=True, coco=True, pixel=given_pixel(0.5, "um"))
    own = dataclasses.replace(folder, pixel=PixelSize(0.25, 0.3, "nm"), read_level=1)
    assert (folder.pixel_size, folder.pixel_unit, folder.read_level) == (0.5, "um", None)
    assert (own.pixel_size, own.pixel_unit, own.read_level, own.coco) == (0.25, "nm", 1, True)
    assert (OutputOptions().pixel_size, OutputOptions().pixel_unit) == (None, "um")
    with pytest.raises(dataclasses.FrozenInstanceError):
        folder.coco = False  # type: ignore[misc]
    with pytest.raises(UnetkitError, match="COCO format"):
        dataclasses.replace(folder, coco_format="mask")
