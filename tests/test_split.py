"""data.split: validation splits stratified by image kind (size and background)."""

from __future__ import annotations

import numpy as np

from unetkit.data.prepare import _split
from unetkit.data.split import kind_of, stratified_val


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


def test_prepare_split_keeps_every_kind_of_image_in_training():
    """``prepare`` records the same stratified split ``train`` makes (it was a random one:
    a seed could put the only large image, or both light ones, in validation)."""
    dark = np.zeros((32, 32, 3), np.uint8)
    dark[:4, :4] = 200
    light = np.full((32, 32, 3), 230, np.uint8)
    light[:4, :4] = 10
    big = np.zeros((64, 96, 3), np.uint8)
    big[:4, :4] = 200
    images = {f"d{i}": dark for i in range(8)} | {"big": big, "l0": light, "l1": light}
    assert kind_of(light) == (32, 32, True) and kind_of(big) == (64, 96, False)
    for seed in range(10):
        split = _split(images, 0.2, seed)
        assert len(split["val"]) == 2 and "big" in split["train"]
        assert {"l0", "l1"} & set(split["train"])
        assert sorted(split["train"] + split["val"]) == sorted(images)
        assert split == _split(images, 0.2, seed)
    assert _split(images, 0.0, 0) == {"train": sorted(images), "val": []}
    assert _split({"a": dark}, 0.5, 0) == {"train": ["a"], "val": []}
