"""Train / validation splits that keep every kind of image in training.

Used by ``unetkit prepare`` (the split it records in ``dataset.json``) and by ``unetkit train``
(``--val-fraction`` when the dataset records none): the same rule for both.
"""

from __future__ import annotations

import random

import numpy as np

from ..config import TrainConfig


def kind_of(image: np.ndarray) -> tuple[int, int, bool]:
    """What the validation split stratifies on: (height, width, bright) of an image, bright
    when its mean lies above the middle of its own range (brightfield and stained slides on a
    light background; fluorescence and dark-field are dark)."""
    low, high = float(image.min()), float(image.max())
    return int(image.shape[0]), int(image.shape[1]), float(image.mean()) > (low + high) / 2


def image_kind(path) -> tuple[int, int, bool]:
    """:func:`kind_of` the image file at ``path``."""
    from .imageio import read_image

    return kind_of(read_image(path))


def stratified_val(
    stems: list[str], kinds: dict[str, tuple], fraction: float, seed: int
) -> list[str]:
    """Validation stems: ``round(fraction * N)`` (at least 1) images, stratified by kind.

    Mixed data sets (fluorescence at several sizes, brightfield, a few large images) hold
    small groups of one kind each, and a random fifth can take every image of a rare kind out
    of training (on the DSB 2018 split it took the only 1272x603 training image and two of
    three 640x512 ones). So the images are grouped by kind (:func:`image_kind`: size and
    light / dark background); each group gives ``floor(fraction * n)`` images and the rest of
    the count goes to the groups with the largest remainders (ties in a seeded random order);
    a group always keeps at least one training image. Only when every group is down to one
    image do single images go (in the seeded order). Within a group the images are taken in a
    seeded random order.
    """
    rng = random.Random(seed)
    groups: dict[tuple, list[str]] = {}
    for stem in sorted(stems):
        groups.setdefault(kinds[stem], []).append(stem)
    keys = sorted(groups)
    rng.shuffle(keys)
    for key in keys:
        rng.shuffle(groups[key])
    want = max(1, round(fraction * len(stems)))
    take = {k: min(int(fraction * len(groups[k]) + 1e-9), len(groups[k]) - 1) for k in keys}
    by_remainder = sorted(keys, key=lambda k: -(fraction * len(groups[k]) - take[k]))
    for key in by_remainder:  # stable sort: ties keep the seeded order
        if sum(take.values()) >= want:
            break
        if take[key] < len(groups[key]) - 1:
            take[key] += 1
    spare = [groups[k][take[k]] for k in keys if take[k] == len(groups[k]) - 1]
    val = [s for k in keys for s in groups[k][: take[k]]]
    val += spare[: max(0, want - len(val))]
    return sorted(val)


# Below this many images no image is held out whole for validation (the default split): a
# fifth of 8 images is 2 of them, a quarter of the labels, and in a mixed set often the only
# image of its kind. A held-out band of every image is validated on instead (held_out_box).
SMALL_SET = 40


def bands_not_images(images: int, val_fraction: float) -> bool:
    """The small-set rule, as ``prepare`` and ``train`` both apply it: fewer than
    ``SMALL_SET`` images (at least one) with ``val_fraction`` left at its default
    (``TrainConfig.val_fraction``) hold no image out whole; a band of each is validated on."""
    return 0 < images < SMALL_SET and val_fraction == TrainConfig.val_fraction


Box = tuple[int, int, int, int]  # (top, bottom, left, right): rows top:bottom, cols left:right


def held_out_box(height: int, width: int, fraction: float) -> Box | None:
    """The validation band of an image: ``fraction`` of its area, a band across its longer
    side at the far edge (the right-hand columns of a landscape or square image, the bottom
    rows of a portrait one), so the rest is one rectangle that keeps the image's shorter
    side whole. None when the image cannot be cut (longer side under 2 px, or no fraction).
    """
    long_side = max(height, width)
    if long_side < 2 or fraction <= 0:
        return None
    cut = min(long_side - 1, max(1, round(fraction * long_side)))
    if width >= height:
        return 0, height, width - cut, width
    return height - cut, height, 0, width


def hide_labels(mask: np.ndarray, box: Box, ignore_index: int, inside: bool) -> np.ndarray:
    """A copy of ``mask`` (H, W) with the labels inside ``box`` (``inside``) or outside it
    set to ``ignore_index``: what a training set with a held-out band learns from, and what
    its validation set scores."""
    top, bottom, left, right = box
    held = np.zeros(mask.shape[:2], bool)
    held[top:bottom, left:right] = True
    fits = np.can_cast(np.min_scalar_type(ignore_index), mask.dtype)
    out = np.array(mask, dtype=mask.dtype if fits else np.int64, copy=True)
    out[held if inside else ~held] = ignore_index
    return out
