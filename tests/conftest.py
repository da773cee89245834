"""Shared fixtures: a tiny synthetic labelme folder and the dataset ``prepare`` makes of it
(built once per test session; tests must not modify them: copy first), and factories that
tests call for their own tiny model, checkpoint, dataset and hand-wired grey-level model
(``tiny_model()``, ``tiny_checkpoint(...)``, ``tiny_dataset(root)``, ``grey_level_model()``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import Checkpoint, DataConfig, ModelConfig, UNet, build_model, make_checkpoint
from unetkit.data.prepare import prepare
from unetkit.data.synthetic import make_labelme_folder

# Peak RSS of a child process, printed by the child itself as ``peak_rss=BYTES``: VmHWM, the
# high-water mark of its own memory. Not ``ru_maxrss``: Linux carries that over fork and exec
# (a vforked child's exec records the parent's high-water mark), so a child started by a big
# test process would report the test process's peak.
PEAK_RSS = (
    "peak = next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') "
    "if line.startswith('VmHWM:'))"
)

LABELME_SIZE = (64, 80)  # (height, width): small, not square
LABELME_IMAGES = 6


@pytest.fixture(scope="session")
def labelme_folder(tmp_path_factory) -> Path:
    """6 labelme JSONs (64x80 RGB, classes cell + nucleus); img_000 and img_003 embed imageData."""
    return make_labelme_folder(
        tmp_path_factory.mktemp("labelme") / "lm",
        n_images=LABELME_IMAGES,
        size=LABELME_SIZE,
        seed=0,
    )


@pytest.fixture(scope="session")
def prepared_dataset(labelme_folder, tmp_path_factory) -> Path:
    """``prepare`` output of ``labelme_folder`` with discovered classes background/cell/nucleus."""
    out = tmp_path_factory.mktemp("prepared") / "ds"
    prepare(labelme_folder, out, val_fraction=0.34, seed=0)
    return out


# -- factories ------------------------------------------------------------------------------------
TINY_CLASSES = ["background", "cell", "nucleus"]
TINY_PALETTE = [[0, 0, 0], [0, 200, 0], [200, 0, 0]]


def make_tiny_model(
    preset: str | None = "milesial",
    *,
    in_channels: int | None = None,
    out_channels: int | None = None,
    seed: int | None = 0,
    **overrides: Any,
) -> UNet:
    """A preset at base width 4 and depth 2 (a few thousand parameters), in eval mode.

    ``preset`` None: the ``ModelConfig`` defaults. Channels default to the preset's; ``seed``
    (None: the global generator as it is) decides the weights.
    """
    if seed is not None:
        torch.manual_seed(seed)
    channels = {"in_channels": in_channels, "out_channels": out_channels}
    overrides.update({k: v for k, v in channels.items() if v is not None})
    if preset is None:
        return UNet(ModelConfig(base_width=4, depth=2, **overrides)).eval()
    return build_model(preset, base_width=4, depth=2, **overrides).eval()


def make_tiny_checkpoint(
    model: torch.nn.Module | None = None,
    *,
    classes: list[str] | None = None,
    palette: list[list[int]] | None = None,
    preprocessing: DataConfig | None = None,
    **kwargs: Any,
) -> Checkpoint:
    """A checkpoint of ``model`` (default: a 3-class RGB ``make_tiny_model``), as training
    would save it. Classes default to background / cell / nucleus with their palette (other
    classes: black); preprocessing to random-crop 32x32 at the model's input channels;
    ``kwargs`` go to ``make_checkpoint`` (task, preset, train_state, extra)."""
    names = list(classes or TINY_CLASSES)
    if model is None:
        model = make_tiny_model(in_channels=3, out_channels=len(names))
    if palette is None:
        palette = TINY_PALETTE if classes is None else [[0, 0, 0]] * len(names)
    if preprocessing is None:
        channels = model.config.in_channels  # type: ignore[union-attr]
        preprocessing = DataConfig(channels=channels, resize="random-crop", size=(32, 32))
    return make_checkpoint(
        model, classes=names, palette=palette, preprocessing=preprocessing, **kwargs
    )


def make_tiny_dataset(root: Path, n: int = 6, size: int = 40, seed: int = 0) -> Path:
    """images/ + masks/ (the ISBI layout): grey squares of class 1, discs of class 2."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size - 14, 2)
        mask[y : y + 12, x : x + 12] = 1
        cy, cx = rng.integers(6, size - 6, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 2
        image = np.choose(mask, [40, 140, 230]).astype(np.float64)
        image += rng.normal(0, 12, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{i:02d}.png"
        )
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


def make_mixed_images(root: Path, n: int) -> Path:
    """``n`` images of three kinds (16x16 dark, 16x24 dark, 24x16 light) in ``root/images``
    with their masks, each one square object of the other brightness."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        h, w, level = [(16, 16, 20), (16, 24, 20), (24, 16, 220)][i % 3]
        image = np.full((h, w), level, np.uint8)
        image[2:6, 2:6] = 255 - level
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray((image == 255 - level).astype(np.uint8)).save(
            root / "masks" / f"{i:02d}.png"
        )
    return root


def make_grey_level_model(out_channels: int = 3) -> UNet:
    """A tiny milesial U-Net wired by hand to classify pixels by grey level (no training).

    Every conv is zero except centre taps that carry ``relu(x)`` and ``relu(-x)`` (x
    normalised with mean 0.5, std 0.25) along the level-0 skip, batch norms at identity, so
    the 1x1 head sees them unchanged: logits ``[2 relu(-x), 1.6, 2 relu(x)]``: class 0 below
    grey 0.3, class 2 above 0.7, class 1 between (binary: one logit ``2 relu(x) - 1.6``).
    """
    model = build_model("milesial", base_width=4, depth=2, in_channels=1, out_channels=out_channels)
    state = model.state_dict()
    for key, value in state.items():
        if value.dim() == 4 or key.startswith(("ups.", "head.")):  # convs; batch norms kept
            value.zero_()
    state["encoders.0.0.weight"][0, 0, 1, 1], state["encoders.0.0.weight"][1, 0, 1, 1] = 1, -1
    for conv in ("encoders.0.3", "decoders.1.0", "decoders.1.3"):
        state[f"{conv}.weight"][0, 0, 1, 1] = state[f"{conv}.weight"][1, 1, 1, 1] = 1
    head = state["head.0.weight"][:, :, 0, 0]
    if out_channels == 3:
        head[0, 1], head[2, 0], state["head.0.bias"][1] = 2, 2, 1.6
    else:
        head[0, 0], state["head.0.bias"][0] = 2, -1.6
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., UNet]:
    """``tiny_model(preset="milesial", in_channels=..., out_channels=..., seed=0, **config)``."""
    return make_tiny_model


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[..., Checkpoint]:
    """``tiny_checkpoint(model=None, classes=..., palette=..., preprocessing=..., **kwargs)``."""
    return make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dataset() -> Callable[..., Path]:
    """``tiny_dataset(root, n=6, size=40, seed=0)``: a trainable images/ + masks/ folder."""
    return make_tiny_dataset


@pytest.fixture(scope="session")
def grey_level_model() -> Callable[..., UNet]:
    """``grey_level_model(out_channels=3)``: a U-Net that classifies by grey level."""
    return make_grey_level_model


@pytest.fixture(autouse=True)
def _pillow_bomb_limit_is_kept():
    """A test must not leave Pillow's decompression-bomb limit changed (importing labelme
    sets it to None, which turned later bomb tests green for the wrong reason)."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    assert before == Image.MAX_IMAGE_PIXELS, "Image.MAX_IMAGE_PIXELS changed by this test"


def sharpen_head(model):
    """A random model whose logits differ clearly from pixel to pixel (the 1x1 head's weights
    x 50, no bias), so exported copies are compared on decisive outputs."""
    with torch.no_grad():
        model.head[0].weight.mul_(50)
        model.head[0].bias.zero_()
    return model
