"""train.resolve: the split ``train`` uses (``--val-stems``, the dataset's, or stratified)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from unetkit.config import TrainConfig
from unetkit.data.layout import describe_dataset
from unetkit.data.split import image_kind
from unetkit.train.resolve import split_stems


def test_split_stems_stratifies_by_size_and_background(tmp_path):
    """Images of a rare kind (one large dark image, two light ones) keep training images."""
    root = tmp_path / "mixed"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    specs = [(32, 32, 20)] * 8 + [(64, 96, 20)] + [(32, 32, 230)] * 2  # (h, w, background)
    for i, (h, w, level) in enumerate(specs):
        image = np.full((h, w), level, np.uint8)
        image[2:6, 2:6] = 255 - level  # an object of the other brightness
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray((image == 255 - level).astype(np.uint8)).save(
            root / "masks" / f"{i:02d}.png"
        )
    assert image_kind(root / "images" / "08.png") == (64, 96, False)
    assert image_kind(root / "images" / "09.png") == (32, 32, True)
    info = describe_dataset(root)
    train, val = split_stems(info, TrainConfig(val_fraction=0.2, seed=0))
    assert len(val) == 2 and "08" in train
    assert {"09", "10"} & set(train)  # the light pair keeps one
    assert sum(s < "08" for s in val) >= 1  # the big group gives its share
