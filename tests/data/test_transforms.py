"""Letterbox / resize with exact undo, and the batch Augmenter (joint, reproducible)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit.config import AugmentConfig
from unetkit.data.transforms import Augmenter, Letterbox, letterbox, resize_array, resize_to

OFF = dict(
    flip=False, rot90=False, affine=0.0, elastic=0.0, brightness=0.0, contrast=0.0,
    gamma=0.0, noise=0.0, blur=0.0,
)  # fmt: skip


def only(**on) -> Augmenter:
    return Augmenter(AugmentConfig(**{**OFF, **on}))


def test_letterbox_geometry_and_undo():
    array = np.arange(8).reshape(2, 4)
    out, geo = letterbox(array, (8, 8), nearest=True, fill=9)
    square = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [9, 9, 9, 9], [9, 9, 9, 9]])
    np.testing.assert_array_equal(out, np.kron(square, np.ones((2, 2), int)))
    assert geo == Letterbox(original=(2, 4), side=4, offset=(0, 0), size=(8, 8))
    np.testing.assert_array_equal(geo.undo(out, nearest=True), array)
    centred = letterbox(array, (8, 8), nearest=True, center=True)[1]
    assert centred.offset == (1, 0)
    # probabilities as a torch (C, H, W) tensor: bilinear 2x down of doubled pixels is exact
    probs = torch.from_numpy(np.stack([out, 10 - out]).astype(np.float32))
    back = geo.undo(probs, nearest=False)
    assert back.shape == (2, 2, 4)
    torch.testing.assert_close(back[0], torch.from_numpy(array).float())
    rgb = np.zeros((3, 5, 3), np.uint8)
    image, geo = letterbox(rgb, (10, 10), nearest=False)
    assert image.shape == (10, 10, 3) and image.dtype == np.uint8 and geo.side == 5


def test_resize_to_and_area_shrink():
    array = np.arange(15).reshape(3, 5)
    out, geo = resize_to(array, (6, 10), nearest=True)
    np.testing.assert_array_equal(out, np.kron(array, np.ones((2, 2), int)))
    np.testing.assert_array_equal(geo.undo(out, nearest=True), array)
    block = np.array([[0, 2, 10, 10], [4, 6, 10, 10], [0, 0, 1, 3], [0, 0, 5, 7]], np.uint8)
    np.testing.assert_array_equal(resize_array(block, (2, 2), nearest=False), [[3, 10], [0, 4]])
    mask = np.array([[0, 255], [1, 2]], np.int64)  # int64 masks: nearest keeps the values
    assert set(np.unique(resize_array(mask, (7, 5), nearest=True))) == {0, 1, 2, 255}


def _batch(b=8, c=3, h=16, w=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(b, c, h, w, generator=gen)
    masks = torch.randint(0, 4, (b, h, w), generator=gen)
    return images, masks, torch.rand(b, h, w, generator=gen)


def test_everything_off_is_identity():
    images, masks, weights = _batch()
    out = Augmenter(AugmentConfig(**OFF))(images, masks, weights)
    assert torch.equal(out[0], images) and torch.equal(out[1], masks)
    assert torch.equal(out[2], weights)


def test_flips_and_rot90_are_exact():
    images, masks, weights = _batch(b=16)
    gen = torch.Generator().manual_seed(1)
    out_i, out_m, out_w = only(flip=True, rot90=True)(images, masks, weights, generator=gen)
    seen = set()
    for i in range(16):
        variants = {
            (k, f): (torch.rot90(masks[i].flip(-1) if f else masks[i], k, (0, 1)))
            for k in range(4)
            for f in (False, True)
        }
        match = [key for key, m in variants.items() if torch.equal(m, out_m[i])]
        assert len(match) >= 1
        k, f = match[0]
        img = torch.rot90(images[i].flip(-1) if f else images[i], k, (1, 2))
        torch.testing.assert_close(out_i[i], img, atol=1e-5, rtol=0)
        wgt = torch.rot90(weights[i].flip(-1) if f else weights[i], k, (0, 1))
        torch.testing.assert_close(out_w[i], wgt, atol=1e-5, rtol=0)
        seen.add(match[0])
    assert len(seen) >= 4  # the eight symmetries are all drawn


def test_rot90_skipped_for_non_square():
    images, masks, _ = _batch(h=8, w=12)
    out = only(rot90=True)(images, masks, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[1], masks)


def test_seeded_output_is_bitwise_identical():
    images, masks, weights = _batch(b=4, h=32, w=32)
    aug = Augmenter(AugmentConfig(affine=1.0, elastic=1.0, blur=1.0))
    a = aug(images, masks, weights, generator=torch.Generator().manual_seed(7))
    b = aug(images, masks, weights, generator=torch.Generator().manual_seed(7))
    c = aug(images, masks, weights, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_geometry_is_joint_and_outside_is_ignored():
    b, h, w = 6, 48, 48
    masks = torch.zeros(b, h, w, dtype=torch.long)
    masks[:, 8:30, 10:40] = 1
    masks[:, 30:44, 4:20] = 2
    images = masks[:, None].float().repeat(1, 2, 1, 1)
    aug = Augmenter(
        AugmentConfig(
            **{
                **OFF,
                "affine": 1.0,
                "rotate_deg": 30,
                "scale": (0.6, 0.7),
                "shift": 0.3,
                "elastic": 1.0,
            }
        ),  # fmt: skip
        ignore_index=99,
    )
    out_i, out_m, _ = aug(images, masks, generator=torch.Generator().manual_seed(0))
    assert set(out_m.unique().tolist()) <= {0, 1, 2, 99}
    assert (out_m == 99).any()  # zoomed out and shifted: pixels from outside the image
    valid = out_m != 99
    agree = (out_i[:, 0].round().long() == out_m)[valid].float().mean()
    assert agree > 0.95  # image (bilinear) and mask (nearest) moved together
    assert torch.isfinite(out_i).all()


def test_elastic_strength_is_sigma_pixels():
    aug = only(elastic=1.0, elastic_sigma=10.0, elastic_grid=3)
    field = aug._elastic(4000, 9, 9, torch.Generator().manual_seed(0))  # (B, 2, H, W)
    corners = field[:, :, 0, 0]  # align_corners bicubic: the corners are the coarse values
    assert abs(corners.std().item() - 10.0) < 0.5
    assert (field[:, :, :, 1:] - field[:, :, :, :-1]).abs().mean() < 3.0  # smooth
    assert only(elastic=1.0, elastic_sigma=0.0)._elastic(2, 9, 9, None) is None


def test_photometric_touches_images_only():
    images = torch.full((4, 1, 16, 16), 0.5)
    images[:, :, :, 8:] = 0.8
    masks = torch.randint(0, 3, (4, 16, 16))
    gen = torch.Generator().manual_seed(0)
    out_i, out_m, _ = only(brightness=0.2, contrast=0.2, gamma=0.2, noise=0.05)(
        images, masks, generator=gen
    )
    assert torch.equal(out_m, masks) and not torch.equal(out_i, images)
    blurred = only(blur=1.0)(images, masks, generator=gen)[0]
    assert blurred[:, :, :, 7:9].std() < images[:, :, :, 7:9].std()  # the edge is smoothed
    torch.testing.assert_close(blurred[:, :, :, :4], images[:, :, :, :4])  # flat parts kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_kept(dtype):
    images, masks, _ = _batch(b=2)
    out = Augmenter(AugmentConfig())(images.to(dtype), masks, generator=torch.Generator())
    assert out[0].dtype == dtype and out[1].dtype == torch.int64


def test_noise_on_the_cpu_is_drawn_from_the_generator_itself():
    """CPU runs keep their noise (and so their results) whatever the GPU path does."""
    from unetkit.data.transforms import _normal_on

    like = torch.zeros(2, 3, 8, 8, dtype=torch.bfloat16)
    got = _normal_on(like, torch.Generator().manual_seed(3))
    want = torch.randn(like.shape, generator=torch.Generator().manual_seed(3))
    assert got.dtype == torch.bfloat16 and torch.equal(got, want.to(torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu.sh)")
def test_noise_on_a_gpu_is_drawn_there_and_seeded():
    from unetkit.data.transforms import _normal_on

    like = torch.zeros(4, 1, 64, 64, device="cuda")
    a = _normal_on(like, torch.Generator().manual_seed(5))
    b = _normal_on(like, torch.Generator().manual_seed(5))
    c = _normal_on(like, torch.Generator().manual_seed(6))
    assert a.device.type == "cuda" and torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.std().item() - 1.0) < 0.05
    images, masks, _ = _batch(b=4, h=32, w=32)
    aug = only(noise=0.1, elastic=1.0)
    runs = [aug(images.cuda(), masks.cuda(), generator=torch.Generator().manual_seed(1))
            for _ in range(2)]  # fmt: skip
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_maps_move_with_the_pixels_and_change_nothing_else():
    images, masks, weights = _batch(b=4, h=32, w=32)
    maps = images[:, 0].clone()  # a dense target equal to the first channel
    aug = Augmenter(AugmentConfig(**{**OFF, "flip": True, "rot90": True, "affine": 1.0,
                                     "elastic": 1.0, "noise": 0.0}))  # fmt: skip
    plain = aug(images, masks, weights, generator=torch.Generator().manual_seed(3))
    out = aug.with_targets(images, masks, weights, maps, generator=torch.Generator().manual_seed(3))
    for x, y in zip(plain, out[:3]):
        assert torch.equal(x, y)
    inside = out[1] != 255
    # resampled like the images (bilinear) away from the image's edge, where the images
    # reflect and the maps read 0
    deep = -F.max_pool2d(-inside[:, None].float(), 3, 1, 1)[:, 0] > 0
    deep[:, [0, -1]] = deep[:, :, [0, -1]] = False
    assert deep.float().mean() > 0.3
    assert torch.allclose(out[3][deep], out[0][:, 0][deep], atol=1e-5)
    assert aug.with_targets(images, masks)[3] is None


def _ellipses(b: int = 4, size: int = 96) -> torch.Tensor:
    """(B, H, W) int64 ids: three ellipses, well inside the image."""
    from skimage.draw import ellipse

    ids = np.zeros((size, size), np.int64)
    for k, (cy, cx, ry, rx, angle) in enumerate(
        ((30, 35, 12, 20, 0.4), (62, 60, 15, 9, -0.3), (45, 52, 8, 8, 0.0)), start=1
    ):
        ids[ellipse(cy, cx, ry, rx, shape=ids.shape, rotation=angle)] = k
    return torch.from_numpy(ids)[None].repeat(b, 1, 1)


@pytest.mark.parametrize(
    "knobs, mean_error",
    [
        ({"flip": True, "rot90": True}, 1e-5),  # rays onto rays: exact
        ({"affine": 1.0, "rotate_deg": 30.0, "scale": (0.8, 1.25)}, 0.7),
        ({"elastic": 1.0}, 2.0),  # sigma 10 px on a 96 px image: strong; first order
    ],
)
def test_rays_turn_and_scale_with_the_objects(knobs, mean_error):
    """The carried rays against rays measured again on the augmented ids (those of a
    nearest-resampled image: ragged edges, so within about half a pixel at best)."""
    from unetkit.data.rays import object_rays

    ids = _ellipses()
    rays = torch.from_numpy(object_rays(ids[0].numpy(), 32).transpose(1, 2, 0))
    rays = rays[None].repeat(4, 1, 1, 1)  # (B, H, W, R): rays last
    images = torch.rand(4, 1, 96, 96)
    aug = Augmenter(AugmentConfig(**{**OFF, **knobs}), ignore_index=1000)
    gen = torch.Generator().manual_seed(1)
    plain = aug.with_targets(images, ids, generator=torch.Generator().manual_seed(1))
    out = aug.with_targets(images, ids, rays=rays, generator=gen)
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    errors = []
    for moved, carried in zip(out[1].numpy(), out[4].numpy().transpose(0, 3, 1, 2)):
        moved = np.where(moved == 1000, 0, moved)
        again = object_rays(moved, 32)
        inside = moved > 0
        errors.append(np.abs(again[:, inside] - carried[:, inside]).mean())
        assert (carried[:, ~inside] == 0).all()
    assert max(errors) < mean_error
    assert aug.with_targets(images, ids)[4] is None


def test_gamma_left_to_the_plan_is_the_default_strength():
    """An ``AugmentConfig`` whose gamma no plan resolved augments with ``GAMMA`` (0.1)."""
    from unetkit.config.data import GAMMA

    images, masks, weights = _batch(b=4, h=32, w=32)
    out = [
        Augmenter(AugmentConfig(gamma=g))(
            images, masks, weights, generator=torch.Generator().manual_seed(5)
        )
        for g in (None, GAMMA, 0.5)
    ]
    assert torch.equal(out[0][0], out[1][0]) and not torch.equal(out[0][0], out[2][0])
