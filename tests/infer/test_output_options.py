"""infer/options.py: what predict_paths writes, one frozen record checked when made."""

from __future__ import annotations

import dataclasses

import pytest

from unetkit.errors import UnetkitError
from unetkit.infer.options import OutputOptions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pixel_size": 0.0}, "pixel size must be > 0; got 0.0"),
        ({"pixel_size": float("nan")}, "pixel size must be > 0"),
        ({"pixel_unit": "inch"}, "pixel unit must be one of nm, um, mm, cm, m; got 'inch'"),
        ({"pixel_unit": "micron"}, "got 'micron'"),  # predict_paths normalises aliases first
        ({"coco_format": "mask"}, "COCO format must be one of rle, polygon; got 'mask'"),
        ({"background": "grey"}, "background must be one of bright, dark; got 'grey'"),
    ],
)
def test_a_bad_value_is_one_line_when_made(change, message):
    with pytest.raises(UnetkitError) as caught:
        OutputOptions(**change)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_per_image_copy_is_checked_too_and_the_folders_stay_as_they_were():
    folder = OutputOptions(objects=True, coco=True, pixel_size=0.5)
    own = dataclasses.replace(folder, pixel_size=0.25, read_level=1)
    assert (folder.pixel_size, folder.read_level) == (0.5, None)
    assert (own.pixel_size, own.read_level, own.coco) == (0.25, 1, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        folder.coco = False  # type: ignore[misc]
    with pytest.raises(UnetkitError, match="pixel size"):
        dataclasses.replace(folder, pixel_size=-1.0)
