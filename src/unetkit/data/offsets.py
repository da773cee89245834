"""Centre-offset targets of the ``offsets`` instance head.

Each object pixel's offset from its object's centre (the mean of its pixels' positions),
divided by the object's radius (the largest distance of one of its pixels from that
centre), as ``(x, y)`` = (columns, rows): inside each object the offsets run from about -1 to
1 through 0 at its centre, and between two touching objects they jump from pointing one way
to pointing the other. HoVer-Net (Graham et al., Medical Image Analysis 2019) trains the
same two maps, normalised per axis, and separates touching nuclei where their gradients are
steep; here one radius per object keeps the vector's direction, so a rotation of the image
rotates the offsets and a scaling leaves them unchanged.

Where offsets point away from each other their divergence is strongly negative (about -1 per
pixel across two touching objects, against ``2 / radius`` > 0 inside one):
:func:`split_lines` is that negative part, the lines along which touching objects split.

Offsets are measured once per image on the whole image (a crop's objects keep their true
centres, as tiles do) and cached like the rays (:func:`offset_table`);
:func:`carry_offsets` moves them with the training augmentation's sampling grid.

The per-pixel tables both heads cache (:func:`pixel_index`, :func:`table_rows`) and the
sampling grid's Jacobian (:func:`grid_jacobian`) live here, free of the rays' numba loops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import UnetkitError


def object_labels(instances: np.ndarray) -> np.ndarray:
    """``instances`` as a C-contiguous (H, W) int64 label image."""
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise UnetkitError(f"instances must be (H, W); got {labels.shape}")
    return np.ascontiguousarray(labels, dtype=np.int64)


def pixel_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A per-pixel table's index of an (H, W) label image: (index (H, W) int32, each object
    pixel's row of the table, -1 elsewhere; the object pixels' rows ys and columns xs, in
    the table's order)."""
    ys, xs = np.nonzero(labels)
    index = np.full(labels.shape, -1, np.int32)
    index[ys, xs] = np.arange(ys.size, dtype=np.int32)
    return index, ys, xs


def table_rows(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Dense (h, w, V) float32 values of a window of a :func:`pixel_index` index (0 where the
    index is -1: background, or padding), values last: each pixel's row side by side, as
    training gathers and moves them."""
    out = np.zeros((*index.shape, values.shape[1]), np.float32)
    inside = index >= 0
    out[inside] = values[index[inside]]
    return out


def object_offsets(instances: np.ndarray) -> np.ndarray:
    """Each object pixel's offset from its object's centre over the object's radius.

    Args:
        instances: (H, W) integer ids, 0 = background.

    Returns:
        (2, H, W) float32 (x, y) offsets in [-1, 1], 0 on background.
    """
    labels = object_labels(instances)
    ys, xs = np.nonzero(labels)
    out = np.zeros((2, *labels.shape), np.float32)
    out[:, ys, xs] = _offsets(labels[ys, xs], ys, xs).T
    return out


def _offsets(ids: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(N, 2) float32 normalised (x, y) offsets of the object pixels (ys, xs) of ids ``ids``."""
    if not ids.size:
        return np.zeros((0, 2), np.float32)
    count = np.bincount(ids).astype(np.float64)
    safe = np.maximum(count, 1)
    dx = xs - (np.bincount(ids, xs.astype(np.float64)) / safe)[ids]
    dy = ys - (np.bincount(ids, ys.astype(np.float64)) / safe)[ids]
    radius = np.zeros(count.size)
    np.maximum.at(radius, ids, np.hypot(dx, dy))
    # a one- or two-pixel object: a radius of at least half a pixel
    scale = np.maximum(radius, 0.5)[ids]
    return np.stack([dx / scale, dy / scale], 1).astype(np.float32)


def offset_table(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of an image's object pixels, compactly: what a data set caches per image.

    Returns:
        (index (H, W) int32: each object pixel's row of ``values``, -1 elsewhere;
        values (N, 2) float16 (x, y) offsets, to about 1e-3).
    """
    labels = object_labels(instances)
    index, ys, xs = pixel_index(labels)
    return index, _offsets(labels[ys, xs], ys, xs).astype(np.float16)


def carry_offsets(offsets: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The offsets of objects moved by a sampling grid: each output pixel takes the offset of
    the input pixel it samples (nearest, as masks are), mapped into the output's frame.

    Near an output pixel the grid maps an output offset ``u`` to the input offset ``J u`` (J,
    the grid's Jacobian in pixels, :func:`grid_jacobian`). An input offset
    ``o`` (over the radius ``r``) is ``J^-1 (r o)`` in output pixels, and the object's radius
    there about ``r / sqrt|det J|``, so the output offset is ``sqrt|det J| J^-1 o``: exact for
    flips, rotations and scaling; to first order for an elastic deformation.

    Args:
        offsets: (B, H, W, 2) float (x, y) offsets of the input, last dimension (x, y).
        grid: (B, H, W, 2) normalised (x, y) sampling grid (``align_corners=False``).

    Returns:
        (B, H, W, 2) float32 offsets of the output, 0 where the source is background or
        outside the input.
    """
    b, h, w, _ = offsets.shape
    picked = F.grid_sample(offsets.permute(0, 3, 1, 2).float(), grid.float(), mode="nearest",
                           padding_mode="zeros", align_corners=False)  # fmt: skip
    o = picked.permute(0, 2, 3, 1)  # (B, H, W, 2)
    j = grid_jacobian(grid, h, w)  # (B, H, W, 2, 2): d(input)/d(output)
    det = j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    safe = torch.where(det.abs() > 1e-9, det, torch.ones_like(det))
    # J^-1 = adj(J) / det; times sqrt|det|: adj(J) o / (sign(det) sqrt|det|)
    factor = 1.0 / (torch.sign(safe) * safe.abs().sqrt())
    ox = (j[..., 1, 1] * o[..., 0] - j[..., 0, 1] * o[..., 1]) * factor
    oy = (-j[..., 1, 0] * o[..., 0] + j[..., 0, 0] * o[..., 1]) * factor
    return torch.stack([ox, oy], -1)


def grid_jacobian(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H, W, 2, 2): d(input x, y) / d(output x, y) in pixels, by central differences
    (one-sided at the edges; the identity along an axis of one pixel)."""
    x_in, y_in = grid[..., 0].float() * (w / 2), grid[..., 1].float() * (h / 2)
    ones, zeros = torch.ones_like(x_in), torch.zeros_like(x_in)
    dx_dy, dx_dx = (torch.gradient(x_in, dim=1)[0] if h > 1 else zeros,
                    torch.gradient(x_in, dim=2)[0] if w > 1 else ones)  # fmt: skip
    dy_dy, dy_dx = (torch.gradient(y_in, dim=1)[0] if h > 1 else ones,
                    torch.gradient(y_in, dim=2)[0] if w > 1 else zeros)  # fmt: skip
    return torch.stack([torch.stack([dx_dx, dx_dy], -1), torch.stack([dy_dx, dy_dy], -1)], -2)


def split_lines(offsets: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Where touching objects split: the negative part of the divergence of the (smoothed)
    offsets, per pixel (central differences).

    Args:
        offsets: (2, H, W) (x, y) offsets (predicted or true).
        sigma: Gaussian smoothing (pixels) of each map first; 0 = none.

    Returns:
        (H, W) float32 >= 0: about 1 along the line between two touching objects, 0 inside
        an object (whose offsets diverge: ``2 / radius``).
    """
    ox, oy = (np.asarray(offsets[i], np.float32) for i in (0, 1))
    if sigma > 0:
        ox, oy = ndimage.gaussian_filter(ox, sigma), ndimage.gaussian_filter(oy, sigma)
    div = np.zeros_like(ox)
    if ox.shape[1] > 1:
        div += np.gradient(ox, axis=1)
    if oy.shape[0] > 1:
        div += np.gradient(oy, axis=0)
    return np.maximum(-div, 0).astype(np.float32)
