"""Hand-wired models and the images they segment exactly: the grey-level model as a
semantic, boundary-, distance-, rays- and offsets-head instance model, touching cells that straddle
every tile border. Shared by the prediction, export, format and normalisation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetkit import DataConfig, PredictConfig, build_model, make_checkpoint, save_checkpoint
from unetkit.infer import Predictor

CLASSES = ["background", "grey", "white"]


PALETTE = [[0, 0, 0], [0, 128, 0], [255, 0, 0]]


LEVELS = (0.1, 0.5, 0.9)  # intensity of each class in the toy images


NORM = {"mean": (0.5,), "std": (0.25,)}


def load_predictor(path, **cfg) -> Predictor:
    return Predictor.from_checkpoint(path, PredictConfig(precision="fp32", **cfg), device="cpu")


def instance_checkpoint(folder: Path, grey_level_model, **objects) -> Path:
    """The hand-wired model as an instance model: dark = background, grey = object interior,
    white = boundary (its three logits)."""
    from unetkit.config import ObjectConfig

    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), **NORM)
    ckpt = make_checkpoint(
        grey_level_model(), classes=["background", "cell"], palette=PALETTE[:2],
        preprocessing=pre, task="instance",
        extra={"objects": ObjectConfig(min_size=0, **objects).to_dict()},
    )  # fmt: skip
    return save_checkpoint(ckpt, folder / "instance.pt")


def cells(h: int, w: int, step: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A grid of touching square cells (grey, 1 px white edges, no gaps between cells) on a
    dark image, at an offset so that cells straddle every tile border: image and true ids."""
    ids = np.zeros((h, w), np.int32)
    count = 0
    for top in range(3, h - step, step):
        for left in range(5, w - step, step):
            count += 1
            ids[top : top + step, left : left + step] = count
    from unetkit.data.targets import object_edges

    edge = object_edges(ids)
    level = np.where(ids > 0, np.where(edge, LEVELS[2], LEVELS[1]), LEVELS[0])
    return np.rint(255 * level).astype(np.uint8), ids


def distance_checkpoint(folder: Path, grey_level_model) -> Path:
    """The hand-wired model as a ``distance`` head instance model: logits [2 relu(-x), 1.6,
    4 relu(x) - 4], so dark = background, brighter = object, and the distance channel
    sigmoid(8 d - 4) for a pixel of grey 0.5 + 0.5 d (x = 2 d)."""
    from unetkit.config import ObjectConfig

    model = grey_level_model()
    with torch.no_grad():
        head = model.head[0]
        head.weight[2, 0, 0, 0], head.bias[2] = 4.0, -4.0  # was 2 relu(x): class "white"
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), **NORM)
    ckpt = make_checkpoint(
        model, classes=["background", "cell"], palette=PALETTE[:2], preprocessing=pre,
        task="instance", extra={"objects": ObjectConfig(head="distance", min_size=0).to_dict()},
    )  # fmt: skip
    return save_checkpoint(ckpt, folder / "distance.pt")


RAYS, RAY_SCALE = 8, 4.0


def rays_checkpoint(folder: Path) -> Path:
    """A ``rays`` head model wired by hand to read its maps from its input: channel 0 is grey
    (0.1 background, 0.5 object), channel 1 the object probability p, channels 2.. the ray
    lengths / ``RAY_SCALE``. Every conv is zero but centre taps that carry relu(+-grey),
    relu(p) and the relu(rays) along the level-0 skip (as ``grey_level_model``), so its
    logits are [2 relu(-grey'), 1.6, 8 p - 4, rays / scale]: per pixel, whatever the tiling."""
    from unetkit.config import ObjectConfig

    c = 2 + RAYS
    model = build_model("milesial", base_width=c + 2, depth=2, in_channels=c,
                        out_channels=3 + RAYS)  # fmt: skip
    state = model.state_dict()
    for key, value in state.items():
        if value.dim() == 4 or key.startswith(("ups.", "head.")):
            value.zero_()
    first = state["encoders.0.0.weight"]
    first[0, 0, 1, 1], first[1, 0, 1, 1] = 1, -1  # relu(grey'), relu(-grey')
    for i in range(1, c):
        first[i + 1, i, 1, 1] = 1  # relu(p), relu(ray / scale)
    for conv in ("encoders.0.3", "decoders.1.0", "decoders.1.3"):
        for i in range(c + 1):
            state[f"{conv}.weight"][i, i, 1, 1] = 1
    head, bias = state["head.0.weight"][:, :, 0, 0], state["head.0.bias"]
    head[0, 1], bias[1] = 2, 1.6
    head[2, 2], bias[2] = 8, -4
    for j in range(RAYS):
        head[3 + j, 3 + j] = 1
    model.load_state_dict(state)
    mean, std = (0.5,) + (0.0,) * (c - 1), (0.25,) + (1.0,) * (c - 1)
    pre = DataConfig(channels=c, resize="random-crop", size=(32, 32), normalize="fixed",
                     mean=mean, std=std)  # fmt: skip
    objects = ObjectConfig(head="rays", n_rays=RAYS, ray_scale=RAY_SCALE, min_size=0)
    ckpt = make_checkpoint(
        model.eval(), classes=["background", "cell"], palette=PALETTE[:2], preprocessing=pre,
        task="instance", extra={"objects": objects.to_dict()},
    )  # fmt: skip
    return save_checkpoint(ckpt, folder / "rays.pt")


def rays_image(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """The input of ``rays_checkpoint`` that makes it predict ``truth``'s maps (the object
    probability made free of ties, so that no rounding of a blend reorders candidates)."""
    from unetkit.data.rays import object_rays
    from unetkit.data.targets import object_distance

    rank = np.random.default_rng(seed).permutation(truth.size).reshape(truth.shape)
    p = np.where(truth > 0, 0.9 * object_distance(truth) + 0.1 * rank / truth.size, 0)
    grey = np.where(truth > 0, 0.5, 0.1)
    rays = object_rays(truth, RAYS) / RAY_SCALE
    return np.concatenate([grey[None], p[None], rays]).transpose(1, 2, 0).astype(np.float32)


def offsets_checkpoint(folder: Path) -> Path:
    """An ``offsets`` head model wired by hand to read its maps from its input: channel 0 is
    grey (0.1 background, 0.5 object, 0.9 boundary), channels 1, 2 the (x, y) offsets.
    Centre taps carry relu(+-grey') and relu(+-x), relu(+-y) along the level-0 skip, so its
    logits are [2 relu(-grey'), 1.6, 2 relu(grey'), x, y]: per pixel, whatever the tiling."""
    from unetkit.config import ObjectConfig

    model = build_model("milesial", base_width=8, depth=2, in_channels=3, out_channels=5)
    state = model.state_dict()
    for key, value in state.items():
        if value.dim() == 4 or key.startswith(("ups.", "head.")):
            value.zero_()
    first = state["encoders.0.0.weight"]
    for i in range(3):
        first[2 * i, i, 1, 1], first[2 * i + 1, i, 1, 1] = 1, -1  # relu(+v), relu(-v)
    for conv in ("encoders.0.3", "decoders.1.0", "decoders.1.3"):
        for i in range(6):
            state[f"{conv}.weight"][i, i, 1, 1] = 1
    head, bias = state["head.0.weight"][:, :, 0, 0], state["head.0.bias"]
    head[0, 1], bias[1], head[2, 0] = 2, 1.6, 2
    head[3, 2], head[3, 3], head[4, 4], head[4, 5] = 1, -1, 1, -1
    model.load_state_dict(state)
    pre = DataConfig(channels=3, resize="random-crop", size=(32, 32), normalize="fixed",
                     mean=(0.5, 0.0, 0.0), std=(0.25, 1.0, 1.0))  # fmt: skip
    objects = ObjectConfig(head="offsets", min_size=0)
    ckpt = make_checkpoint(
        model.eval(), classes=["background", "cell"], palette=PALETTE[:2], preprocessing=pre,
        task="instance", extra={"objects": objects.to_dict()},
    )  # fmt: skip
    return save_checkpoint(ckpt, folder / "offsets.pt")


def offsets_image(truth: np.ndarray) -> np.ndarray:
    """The input of ``offsets_checkpoint`` that makes it predict ``truth``'s objects with no
    boundary class at all (every object pixel grey): only the offsets tell them apart."""
    from unetkit.data.offsets import object_offsets

    grey = np.where(truth > 0, LEVELS[1], LEVELS[0])
    return np.concatenate([grey[None], object_offsets(truth)]).transpose(1, 2, 0).astype(np.float32)


def two_cell_images(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A folder ``in/`` of two images of touching cells, ``a.png`` and ``b.png`` (its left 40
    columns); the image of ``a.png`` and its true cells."""
    image, truth = cells(60, 75)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image).save(inputs / "a.png")
    Image.fromarray(image[:, :40]).save(inputs / "b.png")
    return inputs, image, truth
