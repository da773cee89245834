"""What the training tests share: a tiny model's flags and config, a run on the tiny data set,
instance data, checkpoint weights compared bitwise, the training loggers' messages."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import unetkit
from unetkit import TrainConfig, load_checkpoint
from unetkit.cli import main
from unetkit.config import AugmentConfig, DataConfig

TINY = [
    "--preset",
    "milesial",
    "--base-width",
    "4",
    "--depth",
    "2",
    "--patch-size",
    "32",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def tiny_config(dataset: Path, run: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(dataset),
        run_dir=str(run),
        preset="milesial",
        model=unetkit.preset_config("milesial", base_width=4, depth=2),
        data=DataConfig(size=(32, 32)),
        epochs=3,
        batch_size=2,
        steps_per_epoch=3,
        val_stems=("05",),
        device="cpu",
        precision="fp32",
        deterministic=True,
        panels=0,
        augment=AugmentConfig(elastic_grid=3),
    )
    base.update(kw)
    return TrainConfig(**base)


def tiny_run(dataset: Path, run: Path, *extra: str) -> int:
    return main(
        [
            "train",
            str(dataset),
            "-o",
            str(run),
            "--epochs",
            "1",
            "--val-stems",
            "05",
            "--steps-per-epoch",
            "1",
            *TINY,
            *extra,
        ]
    )


def make_instance_dataset(root: Path, n: int = 4, size: int = 48, seed: int = 0) -> Path:
    """images/ + masks/ + instances/: pairs of touching discs (one class)."""
    from unetkit.data.instances import write_instances

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        ids = np.zeros((size, size), np.int32)
        cy, cx = rng.integers(10, size - 20, 2)
        for k, (dy, dx) in enumerate(((0, 0), (0, 10), (12, 4)), start=1):
            ids[((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 < 36) & (ids == 0)] = k
        image = np.where(ids > 0, 200, 40) + rng.normal(0, 10, ids.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{i:02d}.png"
        )
        Image.fromarray((ids > 0).astype(np.uint8)).save(root / "masks" / f"{i:02d}.png")
        write_instances(root / "instances" / f"{i:02d}.png", ids)
    return root


@contextlib.contextmanager
def said_by_train():
    """The messages the training loggers (``unetkit.train.*``) emit inside the block, read by
    a handler on their parent itself (whatever libraries imported by earlier tests did to
    logging)."""
    said: list[str] = []
    keep = logging.Handler(logging.INFO)
    keep.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    said_by = logging.getLogger("unetkit.train")
    loggers = [said_by] + [logging.getLogger(name) for name in logging.root.manager.loggerDict
                           if name.startswith("unetkit.train.")]  # fmt: skip
    before = said_by.level, [logger.disabled for logger in loggers]
    said_by.setLevel(logging.INFO)
    for logger in loggers:
        logger.disabled = False
    said_by.addHandler(keep)
    try:
        yield said
    finally:
        said_by.removeHandler(keep)
        said_by.setLevel(before[0])
        for logger, disabled in zip(loggers, before[1], strict=True):
            logger.disabled = disabled
