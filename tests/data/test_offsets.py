"""The offsets head's targets (``unetkit.data.offsets``): offsets from each object's centre,
their table, how augmentation carries them, and the split lines between touching objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit.config import AugmentConfig
from unetkit.data.offsets import (
    carry_offsets,
    object_offsets,
    offset_table,
    split_lines,
    table_rows,
)
from unetkit.data.transforms import Augmenter
from unetkit.errors import UnetkitError


def _two_disks(h: int = 40, w: int = 60) -> np.ndarray:
    """Two discs of radius 10 that touch along a vertical line (x = 28 / 29)."""
    yy, xx = np.mgrid[:h, :w]
    ids = np.zeros((h, w), np.int32)
    ids[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 1
    ids[((yy - 20) ** 2 + (xx - 37) ** 2 < 100) & (ids == 0)] = 2
    return ids


def test_offsets_point_from_the_centre_and_reach_one_at_the_farthest_pixel():
    ids = _two_disks()
    off = object_offsets(ids)
    assert off.shape == (2, 40, 60) and off.dtype == np.float32
    assert (off[:, ids == 0] == 0).all()
    for i in (1, 2):
        ys, xs = np.nonzero(ids == i)
        radius = np.hypot(xs - xs.mean(), ys - ys.mean()).max()
        assert np.allclose(off[0, ys, xs], (xs - xs.mean()) / radius, atol=1e-6)
        assert np.allclose(off[1, ys, xs], (ys - ys.mean()) / radius, atol=1e-6)
        assert np.hypot(off[0, ys, xs], off[1, ys, xs]).max() == pytest.approx(1.0)
    single = np.zeros((5, 5), np.int32)
    single[2, 2] = 7  # one pixel: its own centre
    assert (object_offsets(single) == 0).all()
    with pytest.raises(UnetkitError, match="instances must be"):
        object_offsets(np.zeros((2, 3, 4), np.int32))


def test_the_offset_table_holds_the_object_pixels_offsets():
    ids = _two_disks()
    index, values = offset_table(ids)
    assert values.dtype == np.float16 and values.shape == ((ids > 0).sum(), 2)
    assert (index[ids == 0] == -1).all()
    dense = table_rows(index[5:30, 10:50], values).transpose(2, 0, 1)  # a window of it
    assert np.abs(dense - object_offsets(ids)[:, 5:30, 10:50]).max() < 1e-3


def test_split_lines_run_between_touching_objects_not_inside_them():
    ids = _two_disks()
    lines = split_lines(object_offsets(ids), sigma=0)
    contact = (ids == 1) & (np.roll(ids, -1, axis=1) == 2) | (ids == 2) & (np.roll(ids, 1, 1) == 1)
    assert lines[contact].min() > 0.6  # a jump of about 1.6 over two pixels
    yy, xx = np.mgrid[:40, :60]
    inside = (yy - 20) ** 2 + (xx - 20) ** 2 < 6**2  # the left disc's middle
    assert lines[inside].max() == 0  # offsets diverge inside an object: no line
    smooth = split_lines(object_offsets(ids), sigma=1.0)
    assert smooth[contact].min() > 0.25 and smooth[inside].max() < 0.05


def _ellipses(b: int = 4, size: int = 96) -> np.ndarray:
    from skimage.draw import ellipse

    ids = np.zeros((size, size), np.int64)
    for k, (cy, cx, ry, rx, angle) in enumerate(
        ((30, 35, 12, 20, 0.4), (62, 60, 15, 9, -0.3), (45, 52, 8, 8, 0.0)), start=1
    ):
        ids[ellipse(cy, cx, ry, rx, shape=ids.shape, rotation=angle)] = k
    return ids


@pytest.mark.parametrize(
    "knobs, mean_error",
    [
        ({"flip": True, "rot90": True}, 1e-6),  # exact
        ({"affine": 1.0, "rotate_deg": 30.0, "scale": (0.8, 1.25)}, 0.05),
        ({"elastic": 1.0}, 0.15),  # sigma 10 px on a 96 px image: strong; first order
    ],
)
def test_offsets_turn_with_the_objects(knobs, mean_error):
    """The carried offsets against offsets measured again on the augmented ids (a
    nearest-resampled image: ragged edges move each centre and radius a little)."""
    ids = torch.from_numpy(_ellipses())[None].repeat(4, 1, 1)
    offsets = torch.from_numpy(object_offsets(ids[0].numpy()).transpose(1, 2, 0))
    offsets = offsets[None].repeat(4, 1, 1, 1)  # (B, H, W, 2)
    images = torch.rand(4, 1, 96, 96)
    off = dict(flip=False, rot90=False, affine=0.0, elastic=0.0, brightness=0.0,
               contrast=0.0, gamma=0.0, noise=0.0, blur=0.0)  # fmt: skip
    aug = Augmenter(AugmentConfig(**{**off, **knobs}), ignore_index=1000)
    plain = aug.with_targets(images, ids, generator=torch.Generator().manual_seed(1))
    out = aug.with_targets(images, ids, generator=torch.Generator().manual_seed(1),
                           offsets=offsets)  # fmt: skip
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    assert plain[5] is None
    errors = []
    for moved, carried in zip(out[1].numpy(), out[5].numpy().transpose(0, 3, 1, 2)):
        moved = np.where(moved == 1000, 0, moved)
        again, inside = object_offsets(moved), moved > 0
        errors.append(np.abs(again[:, inside] - carried[:, inside]).mean())
        assert (carried[:, ~inside] == 0).all()
    assert max(errors) < mean_error


def test_a_flip_negates_the_flipped_axis_and_a_zoom_keeps_the_offsets():
    ids = _ellipses()
    t = torch.from_numpy(object_offsets(ids).transpose(1, 2, 0))[None]
    for theta, expected in (
        ([[-1.0, 0, 0], [0, 1, 0]], object_offsets(ids[:, ::-1].copy())),
        ([[1.0, 0, 0], [0, -1, 0]], object_offsets(ids[::-1].copy())),
    ):
        grid = torch.nn.functional.affine_grid(torch.tensor([theta]), [1, 1, 96, 96],
                                               align_corners=False)  # fmt: skip
        assert np.abs(carry_offsets(t, grid)[0].numpy().transpose(2, 0, 1) - expected).max() < 1e-5
    zoom = torch.nn.functional.affine_grid(torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]]),
                                           [1, 1, 96, 96], align_corners=False)  # fmt: skip
    carried = carry_offsets(t, zoom)[0].numpy()
    # the centre pixel of the zoomed output samples the input's centre pixel: same offset
    assert np.allclose(carried[48, 48], t[0, 48, 48].numpy(), atol=1e-5)
