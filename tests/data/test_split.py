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
    # a fraction asked for (the default 0.2 holds no image of a set this small out: the
    # small-set rule); 0.18 of 11 rounds to the same 2 images
    for seed in range(10):
        split = _split(images, 0.18, seed)
        assert len(split["val"]) == 2 and "big" in split["train"]
        assert {"l0", "l1"} & set(split["train"])
        assert sorted(split["train"] + split["val"]) == sorted(images)
        assert split == _split(images, 0.18, seed)
    assert _split(images, 0.0, 0) == {"train": sorted(images), "val": []}
    assert _split({"a": dark}, 0.5, 0) == {"train": ["a"], "val": []}


def test_held_out_box_is_a_band_of_the_fraction_across_the_longer_side():
    from unetkit.data.split import held_out_box

    cases = [  # (height, width) -> (top, bottom, left, right)
        ((256, 256), (0, 256, 205, 256)),  # square: the right-hand columns
        ((256, 320), (0, 256, 256, 320)),  # landscape: 64 of 320 columns
        ((520, 100), (416, 520, 0, 100)),  # portrait: the bottom rows
        ((2, 1), (1, 2, 0, 1)),  # at least one row, and one left to train on
        ((3, 40), (0, 3, 32, 40)),
    ]
    for (h, w), box in cases:
        assert held_out_box(h, w, 0.2) == box, (h, w)
    assert held_out_box(1, 1, 0.2) is None and held_out_box(10, 10, 0.0) is None
    top, bottom, left, right = held_out_box(520, 696, 0.2)
    assert abs((bottom - top) * (right - left) / (520 * 696) - 0.2) < 0.01


def test_hide_labels_inside_for_training_outside_for_validation():
    from unetkit.data.split import hide_labels

    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    box = (0, 3, 3, 4)
    train, val = hide_labels(mask, box, 255, True), hide_labels(mask, box, 255, False)
    assert (train[:, 3] == 255).all() and (train[:, :3] == mask[:, :3]).all()
    assert (val[:, :3] == 255).all() and (val[:, 3] == mask[:, 3]).all()
    assert (mask == np.arange(12).reshape(3, 4)).all()  # the input is left alone
    wide = hide_labels(mask, box, -1, True)  # an ignore index the dtype cannot hold
    assert wide.dtype == np.int64 and (wide[:, 3] == -1).all()


def test_prepare_holds_no_image_out_of_a_small_set_by_default():
    light = np.full((32, 32, 3), 230, np.uint8)
    images = {f"{i:02d}": light for i in range(8)}
    assert _split(images, 0.2, 0) == {"train": sorted(images), "val": []}
    assert len(_split(images, 0.25, 0)["val"]) == 2  # a fraction asked for: whole images
    many = {f"{i:02d}": light for i in range(40)}
    assert len(_split(many, 0.2, 0)["val"]) == 8
