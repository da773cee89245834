"""train.resolve: the validation split stratified by image kind."""

from __future__ import annotations

import numpy as np
from PIL import Image

from unetkit.config import TrainConfig
from unetkit.data.layout import describe_dataset
from unetkit.train.resolve import image_kind, split_stems, stratified_val


def _kinds(groups: dict[tuple, int]) -> tuple[list[str], dict[str, tuple]]:
    stems, kinds = [], {}
    for g, (kind, n) in enumerate(groups.items()):
        for i in range(n):
            stem = f"g{g}_{i:02d}"
            stems.append(stem)
            kinds[stem] = kind
    return stems, kinds


def test_every_kind_keeps_training_images_and_counts_follow_the_fraction():
    # as DSB 2018's training part: 24, 19, 8, 8, 5, 3, 2 and 1 image(s) of eight kinds
    sizes = [24, 19, 8, 8, 5, 3, 2, 1]
    stems, kinds = _kinds({(i, i, False): n for i, n in enumerate(sizes)})
    for seed in range(5):
        val = stratified_val(stems, kinds, 0.2, seed)
        assert len(val) == round(0.2 * len(stems)) == 14
        per_kind = [sum(kinds[s] == (i, i, False) for s in val) for i in range(len(sizes))]
        # floors 4 3 1 1 1 0 0 0 (10); the remainders .8 .8 go first, then two of the three .6
        assert [per_kind[i] for i in (0, 1, 4, 6, 7)] == [5, 4, 1, 0, 0]
        assert per_kind[2] + per_kind[3] + per_kind[5] == 4 and min(per_kind[2:4]) >= 1
        assert per_kind[-1] == 0  # the single image of a kind stays in training
        assert val == stratified_val(stems, kinds, 0.2, seed)  # deterministic
    assert stratified_val(stems, kinds, 0.2, 0) != stratified_val(stems, kinds, 0.2, 1)


def test_all_kinds_single_falls_back_to_a_seeded_random_fifth():
    stems, kinds = _kinds({(i, i, True): 1 for i in range(10)})
    val = stratified_val(stems, kinds, 0.2, 3)
    assert len(val) == 2 and set(val) <= set(stems)
    two, kinds2 = _kinds({(1, 1, True): 2})
    assert len(stratified_val(two, kinds2, 0.2, 0)) == 1  # at least one validation image


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
