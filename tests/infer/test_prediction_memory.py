"""Memory a prediction holds besides the network: the image's own buffers (what the tile rule
counts, ``unetkit.infer.budget``) and the pictures drawn at the image's size (``viz``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

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


def test_image_bytes_count_the_input_mask_pictures_probabilities_and_objects():
    from unetkit.infer import budget

    # RGB uint8 in, uint8 mask, colour mask + overlay + one PNG encoding (3 x 3 bytes)
    assert budget.image_bytes((4096, 4096), 3) == 4096**2 * (3 + 1 + 9)
    # uint16 grey, 3 classes of float32 + float16 probabilities, ids + scores + objects.png
    assert budget.image_bytes((100, 10), 1, 2, classes=3) == 1000 * (2 + 1 + 9 + 3 * 6 + 11)


def test_the_tile_rule_leaves_the_image_its_buffers(monkeypatch):
    """One 1 GiB CPU budget for the forward pass and the image's buffers: the full-width
    model keeps its 640 px tiles up to 4096^2 and drops to the floor's 416 px at 8192^2."""
    from unetkit.infer import budget

    cpu = torch.device("cpu")
    monkeypatch.setattr(budget, "available_memory", lambda: 64.0 * 2**30)

    def rgb(side: int, classes: int = 0) -> int:
        return budget.image_bytes((side, side), 3, classes=classes)

    assert budget.auto_tiling(64, cpu, rgb(2048)) == (640, 1)  # 600 MiB + 52 MiB
    assert budget.auto_tiling(64, cpu, rgb(4096)) == (640, 1)  # 600 MiB + 208 MiB
    assert budget.auto_tiling(64, cpu, rgb(8192)) == (416, 1)  # 832 MiB: the 256 MiB floor
    assert budget.auto_tiling(16, cpu, rgb(8192)) == (640, 1)  # the floor holds 640 at width 16
    side = budget.auto_tiling(64, cpu, rgb(4096, classes=2))[0]  # probabilities kept
    assert side == 544 and 64 * 24 * side**2 + rgb(4096, classes=2) <= 2**30
    monkeypatch.setattr(budget, "available_memory", lambda: 512.0 * 2**20)  # a quarter: 128 MiB
    assert budget.auto_tiling(64, cpu, rgb(8192)) == budget.auto_tiling(64, cpu) == (288, 1)


def test_predictor_counts_the_image_it_predicts(monkeypatch, grey_level_model, tmp_path):
    """Predictor asks the tile rule with the buffers of the image in hand: the mask only for
    ``predict_mask``, the probabilities and objects for ``predict_proba``."""
    from unetkit import DataConfig, PredictConfig, Predictor, make_checkpoint, save_checkpoint
    from unetkit.infer import budget, predict

    asked = []  # held bytes of each call (0: the batch size, asked once)

    def spy(width, device, held=0):
        asked.append(held)
        return budget.auto_tiling(width, device, held)

    monkeypatch.setattr(predict, "auto_tiling", spy)
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), mean=(0.5,), std=(0.25,))
    ckpt = make_checkpoint(grey_level_model(), classes=["bg", "a", "b"],
                           palette=PALETTE, preprocessing=pre)  # fmt: skip
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    predictor = Predictor.from_checkpoint(path, PredictConfig(precision="fp32", strategy="tile"))
    image = np.zeros((96, 80), np.uint8)
    predictor.predict_mask(image)
    predictor.predict_proba(image)
    assert [h for h in asked if h] == [
        budget.image_bytes((96, 80), 1),
        budget.image_bytes((96, 80), 1, 1, 3),
    ]
