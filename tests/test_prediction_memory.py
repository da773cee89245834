"""Memory a prediction holds besides the network: the image's own buffers (what the tile rule
counts, ``unetkit.infer.budget``) and the pictures drawn at the image's size (``viz``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from unetkit.viz import colorize, overlay

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]


def _reference_overlay(image, mask, alpha):
    """The blend as one whole-image expression (float32 buffers of the image's size)."""
    lut = np.asarray(PALETTE, np.uint8)
    mask = mask.astype(np.int64)
    colours = lut[np.clip(mask, 0, 2)].astype(np.float32)
    colours[mask == 255] = (255, 255, 255)
    blend = image.astype(np.float32) * (1 - alpha) + colours * alpha
    return np.where((mask > 0)[:, :, None], np.rint(blend), image).astype(np.uint8)


def _peak_bytes(fn, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2050, 620, 3), dtype=np.uint8)
    y, x = np.mgrid[:2050, :620]
    mask = ((y // 61 + x // 47) % 3).astype(np.uint8)  # regions of classes 0, 1, 2
    mask[:40, :50] = 255  # ignored pixels: blended with white
    return image, mask


def test_overlay_and_colour_mask_hold_about_their_output(big):
    """A uint8 mask of 1.3 M pixels: the colour mask and the overlay take a few bytes per pixel
    (their output, 3), not float32 copies of the image (about 60 before)."""
    image, mask = big
    pixels = mask.size
    assert _peak_bytes(colorize, mask, PALETTE) < 5 * pixels
    assert _peak_bytes(overlay, image, mask, PALETTE, 0.5, contours=True) < 10 * pixels


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_overlay_blends_like_the_whole_image_expression(big, alpha):
    """Blended band by band, every pixel comes out as the whole-image float32 blend gave it."""
    image, mask = big
    got = overlay(image, mask, PALETTE, alpha, contours=False)
    np.testing.assert_array_equal(got, _reference_overlay(image, mask, alpha))
    wide = overlay(image, mask.astype(np.int64), PALETTE, alpha, contours=False)
    np.testing.assert_array_equal(wide, got)  # the mask's dtype changes nothing
    np.testing.assert_array_equal(colorize(mask.astype(np.int64), PALETTE), colorize(mask, PALETTE))
