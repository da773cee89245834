"""The rays head's targets (``unetkit.data.rays``): ray lengths of small shapes."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.config import ObjectConfig
from unetkit.data.rays import object_rays, ray_angles, ray_table, rays_of
from unetkit.errors import UnetkitError


def _disk(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.int32)


def test_a_disks_rays_from_its_centre_are_its_radius():
    rays = object_rays(_disk(64, 32, 32, 20), 32)
    # the digital disk's edge lies within half a pixel of the circle (+ the pixel's half)
    assert np.abs(rays[:, 32, 32] - 20.5).max() < 0.7
    assert rays.shape == (32, 64, 64) and rays.dtype == np.float32
    assert (rays[:, 0, 0] == 0).all()  # background


def test_a_squares_rays_are_its_pixel_edges():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:15] = 1  # pixel squares span 4.5 .. 14.5
    rays = object_rays(labels, 8)[:, 7, 9]
    s = np.sqrt(2)
    # +x, down-right, +y, down-left, -x, up-left, -y, up-right (angles from +x towards +y)
    assert np.allclose(rays, [5.5, 5.5 * s, 7.5, 4.5 * s, 4.5, 2.5 * s, 2.5, 2.5 * s], atol=1e-5)
    one = np.zeros((5, 5), np.int32)
    one[2, 2] = 7  # a single pixel: the square of its pixel
    expected = 0.5 / np.maximum(np.abs(np.sin(ray_angles(8))), np.abs(np.cos(ray_angles(8))))
    assert np.allclose(object_rays(one, 8)[:, 2, 2], expected)


def test_rays_stop_at_other_objects_and_at_the_image_border():
    labels = np.zeros((10, 12), np.int32)
    labels[2:8, 0:6] = 1
    labels[2:8, 6:12] = 2  # touching object 1 on its right, the image border on its left
    rays = object_rays(labels, 8)
    assert rays[0, 4, 3] == pytest.approx(2.5)  # +x: into object 2 at column 5.5
    assert rays[4, 4, 3] == pytest.approx(3.5)  # -x: the image border at column -0.5
    assert rays[4, 4, 8] == pytest.approx(2.5)  # object 2's -x ray ends at object 1


def test_flips_and_transposes_permute_the_rays():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 48), np.int32)
    for k in range(1, 6):
        top, left = rng.integers(0, 30), rng.integers(0, 38)
        labels[top : top + rng.integers(4, 10), left : left + rng.integers(4, 10)] = k
    n = 16
    rays, k = object_rays(labels, n), np.arange(n)
    # left-right: angle phi -> pi - phi; up-down: phi -> -phi; transpose: phi -> pi / 2 - phi
    assert np.allclose(object_rays(labels[:, ::-1], n), rays[(n // 2 - k) % n][:, :, ::-1])
    assert np.allclose(object_rays(labels[::-1], n), rays[(-k) % n][:, ::-1])
    assert np.allclose(object_rays(labels.T.copy(), n), rays[(n // 4 - k) % n].transpose(0, 2, 1))


def test_the_ray_table_holds_the_object_pixels_rays():
    labels = np.zeros((30, 30), np.int32)
    labels[3:12, 4:20] = 1
    labels[15:28, 10:22] = 5
    index, values = ray_table(labels, 16)
    assert index.dtype == np.int32 and values.dtype == np.float16
    assert (index >= 0).sum() == (labels > 0).sum() == len(values)
    dense = object_rays(labels, 16)
    assert np.allclose(rays_of(index, values), dense.transpose(1, 2, 0), rtol=1e-3)
    window = np.pad(index, 2, constant_values=-1)[5:25, 0:20]  # a padded crop
    padded = np.pad(dense, ((0, 0), (2, 2), (2, 2)))[:, 5:25, 0:20].transpose(1, 2, 0)
    assert np.allclose(rays_of(window, values), padded, rtol=1e-3)


def test_ray_counts_are_validated():
    for bad in (4, 6, 30):
        with pytest.raises(UnetkitError, match="multiple of 4"):
            object_rays(np.ones((3, 3), np.int32), bad)
        with pytest.raises(ValueError, match="n_rays"):
            ObjectConfig(head="rays", n_rays=bad)
    for key, bad in (("prob_thresh", 1.0), ("nms_thresh", 1.5), ("ray_scale", 0.0),
                     ("rays_weight", -1.0)):  # fmt: skip
        with pytest.raises(ValueError, match=key):
            ObjectConfig(head="rays", **{key: bad})
