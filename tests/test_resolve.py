"""train.resolve: the split ``train`` uses (``--val-stems``, the dataset's, or stratified)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import make_mixed_images
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
    # a fraction asked for: the default (0.2) holds no image of a set this small out
    train, val = split_stems(info, TrainConfig(val_fraction=0.18, seed=0))
    assert len(val) == 2 and "08" in train
    assert {"09", "10"} & set(train)  # the light pair keeps one
    assert sum(s < "08" for s in val) >= 1  # the big group gives its share


def _mixed(root, n: int):
    """``n`` images of three kinds, each one square object of the other brightness."""
    make_mixed_images(root, n)
    return describe_dataset(root)


def test_a_small_set_loses_no_image_to_validation_and_validates_on_bands(tmp_path):
    from unetkit.train.resolve import describe_split, validation_regions

    info = _mixed(tmp_path / "eight", 8)
    cfg = TrainConfig()
    train, val = split_stems(info, cfg)
    assert train == list(info.stems) and val == []
    regions = validation_regions(info, cfg)
    assert regions["00"] == (0, 16, 13, 16)  # square: the right-hand 3 of 16 columns
    assert regions["01"] == (0, 16, 19, 24)  # landscape: 5 of 24 columns
    assert regions["02"] == (19, 24, 0, 16)  # portrait: the bottom 5 of 24 rows
    assert sorted(regions) == list(info.stems)
    line = describe_split(info, cfg, train, val, regions)
    assert "held-out regions: 8 images are fewer than 40" in line and "20%" in line
    # asked for whole images: --val-stems, another fraction; image-to-image: no masks
    for other in (cfg.replace(val_stems=("03",)), cfg.replace(val_fraction=0.25),
                  cfg.replace(task="regression")):  # fmt: skip
        assert validation_regions(info, other) == {}
        assert split_stems(info, other)[1] != [] or other.task == "regression"
    one = _mixed(tmp_path / "one", 1)  # a single image validates too (on its band)
    assert split_stems(one, cfg) == (["00"], []) and list(validation_regions(one, cfg)) == ["00"]


def test_the_split_of_forty_images_and_more_is_unchanged(tmp_path):
    """From 40 images on, the default split is the stratified fifth of whole images, as it
    was before the small-set rule (the stems the earlier code chose, seed 0)."""
    from unetkit.train.resolve import validation_regions

    expected = {
        40: ["04", "09", "11", "27", "32", "34", "35", "39"],
        41: ["04", "09", "11", "27", "32", "34", "37", "39"],
    }
    for n, val in expected.items():
        info = _mixed(tmp_path / f"m{n}", n)
        train, got = split_stems(info, TrainConfig())
        assert got == val and len(train) == n - 8
        assert validation_regions(info, TrainConfig()) == {}
