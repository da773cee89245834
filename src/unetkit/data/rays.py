"""Star-convex ray targets of the ``rays`` instance head (StarDist's representation).

Schmidt et al., "Cell Detection with Star-convex Polygons" (MICCAI 2018): each object pixel
predicts the distance from its centre to its object's edge along ``n_rays`` evenly spaced
directions; the polygon through those points is the object as seen from that pixel.

Ray ``k`` points at angle ``2 pi k / n_rays`` measured from the +x axis (columns) towards +y
(rows, downwards): its unit direction is ``(dy, dx) = (sin, cos)`` (:func:`ray_angles`).

A ray's length is exact for the object's pixel squares: the distance from the pixel's centre
to where the ray first enters a pixel of another id (another object or background), or
leaves the image, found by walking the pixel grid cell by cell (Amanatides and Woo's
traversal, so no pixel the ray crosses is skipped, however thin). A ray through a pixel corner
goes on diagonally when only the corner is crossed. A one-pixel object has rays of
``0.5 / max(|sin|, |cos|)``: the square of its pixel. Unlike :func:`object_distance`, the
image border is an edge: a polygon stops where the image does.

:func:`carry_rays` moves the rays with the training augmentation's sampling grid.

The loop is compiled with numba (cached on disk after the first run; this module is imported
only where the rays head needs it). Only object pixels are measured, so the cost is about
(object pixels) x ``n_rays`` x (mean ray length): 0.5 s of one core for an image of 1024^2
pixels with 1764 nuclei of radius 6-12 px (450 k object pixels), once per training image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from ..errors import UnetkitError
from .offsets import grid_jacobian, object_labels, pixel_index, table_rows


def ray_angles(n_rays: int) -> np.ndarray:
    """The rays' angles ``2 pi k / n_rays`` (float64, radians)."""
    return 2 * np.pi * np.arange(n_rays) / n_rays


def check_rays(n_rays: int) -> None:
    """``n_rays`` must be a multiple of 4 (>= 8): flips and quarter turns map rays onto rays."""
    if n_rays < 8 or n_rays % 4:
        raise UnetkitError(f"n_rays must be a multiple of 4 and >= 8; got {n_rays}")


@njit(cache=True, nogil=True)
def _march(labels, ys, xs, sin, cos, out):
    height, width = labels.shape
    tie = 1e-9
    for n in range(ys.size):
        y0, x0 = ys[n], xs[n]
        own = labels[y0, x0]
        for k in range(sin.size):
            dy, dx = sin[k], cos[k]
            step_y = 1 if dy > 0 else -1
            step_x = 1 if dx > 0 else -1
            # ray parameter at the next horizontal / vertical cell boundary, and between them
            next_y, every_y = np.inf, np.inf
            if abs(dy) > 1e-12:
                next_y, every_y = 0.5 / abs(dy), 1.0 / abs(dy)
            next_x, every_x = np.inf, np.inf
            if abs(dx) > 1e-12:
                next_x, every_x = 0.5 / abs(dx), 1.0 / abs(dx)
            y, x = y0, x0
            while True:
                if next_y < next_x - tie:
                    t = next_y
                    y += step_y
                    next_y += every_y
                elif next_x < next_y - tie:
                    t = next_x
                    x += step_x
                    next_x += every_x
                else:  # through a corner: the diagonal cell is the next one crossed
                    t = next_y
                    y += step_y
                    x += step_x
                    next_y += every_y
                    next_x += every_x
                if y < 0 or y >= height or x < 0 or x >= width or labels[y, x] != own:
                    out[n, k] = t
                    break


def _measure(labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_rays: int) -> np.ndarray:
    """(N, n_rays) float32 ray lengths of the pixels (ys, xs) of ``labels``."""
    check_rays(n_rays)
    angles = ray_angles(n_rays)
    out = np.zeros((ys.size, n_rays), np.float32)
    if ys.size:
        _march(labels, ys.astype(np.int64), xs.astype(np.int64), np.sin(angles),
                   np.cos(angles), out)  # fmt: skip
    return out


def object_rays(instances: np.ndarray, n_rays: int = 32) -> np.ndarray:
    """Each object pixel's ray lengths to its object's edge (0 on background).

    Args:
        instances: (H, W) integer ids, 0 = background.
        n_rays: rays per pixel, a multiple of 4.

    Returns:
        (n_rays, H, W) float32, in pixels.
    """
    labels = object_labels(instances)
    ys, xs = np.nonzero(labels)
    out = np.zeros((n_rays, *labels.shape), np.float32)
    out[:, ys, xs] = _measure(labels, ys, xs, n_rays).T
    return out


def ray_table(instances: np.ndarray, n_rays: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The rays of an image's object pixels, compactly: what a data set caches per image.

    Returns:
        (index (H, W) int32: each object pixel's row of ``values``, -1 elsewhere;
        values (N, n_rays) float16, the ray lengths in pixels (about 0.03 % relative error)).
    """
    labels = object_labels(instances)
    index, ys, xs = pixel_index(labels)
    return index, _measure(labels, ys, xs, n_rays).astype(np.float16)


# dense (h, w, n_rays) float32 rays of a window of a ``ray_table`` index, rays last (0 where
# the index is -1: background, or padding): the generic reader of a per-pixel table
rays_of = table_rows


def carry_rays(rays: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The rays of objects moved by a sampling grid: each output pixel takes the rays of the
    input pixel it samples (nearest, as masks are) and turns them into its own.

    Near an output pixel the grid maps an output offset ``u`` to the input offset ``J u``
    (J, the grid's 2 x 2 Jacobian in pixels, ``grid_jacobian``). So the output ray at
    angle ``phi``, of unit direction ``u``, runs along the input ray at the angle of
    ``J u`` (linearly interpolated between the two input rays either side of it) and is that
    long divided by ``|J u|``. Exact for flips, quarter turns (which map rays onto rays when
    R is a multiple of 4), rotations and scaling, where J is constant; to first order for an
    elastic deformation. Only object pixels (a ray > 0) are computed.

    Args:
        rays: (B, H, W, R) float ray lengths in pixels of the input, rays last.
        grid: (B, H, W, 2) normalised (x, y) sampling grid (``align_corners=False``).

    Returns:
        (B, H, W, R) float32 ray lengths of the output, 0 where the source is background or
        outside the input.
    """
    b, h, w, r = rays.shape
    flat = rays.reshape(b, h * w, r).float()
    # the input pixel each output pixel samples: 1 + its index, picked like a mask's values
    dtype = torch.float32 if h * w < 2**24 else torch.float64  # indices exact in the float
    numbers = torch.arange(1, h * w + 1, device=rays.device, dtype=dtype).view(1, 1, h, w)
    picked = F.grid_sample(numbers.expand(b, 1, h, w), grid.to(dtype), mode="nearest",
                           padding_mode="zeros", align_corners=False)  # fmt: skip
    source = picked[:, 0].long() - 1  # (B, H, W), -1 outside the input
    objects = flat.amax(2) > 0  # (B, H * W)
    on = (source >= 0) & objects.gather(1, source.clamp_min(0).view(b, -1)).view(b, h, w)
    out = torch.zeros(b, h, w, r, device=rays.device)
    if not bool(on.any()):
        return out
    batch = torch.arange(b, device=rays.device).view(b, 1, 1).expand(b, h, w)[on]
    lengths = flat[batch, source[on]]  # (N, R)
    jacobian = grid_jacobian(grid, h, w)  # (B, H, W, 2, 2)
    out[on] = _turned(lengths, jacobian[on])
    return out


def _turned(lengths: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    """(N, R) input rays -> output rays, given each pixel's (N, 2, 2) Jacobian."""
    r = lengths.shape[1]
    angles = torch.arange(r, device=lengths.device, dtype=torch.float32) * (2 * math.pi / r)
    cos, sin = torch.cos(angles), torch.sin(angles)
    vx = jacobian[:, 0, :1] * cos + jacobian[:, 0, 1:] * sin  # (N, R): J u, in the input
    vy = jacobian[:, 1, :1] * cos + jacobian[:, 1, 1:] * sin
    at = torch.atan2(vy, vx).remainder(2 * math.pi) * (r / (2 * math.pi))  # in ray units
    below = at.floor()
    share = at - below
    first = below.long().remainder(r)
    turned = (1 - share) * lengths.gather(1, first) + share * lengths.gather(
        1, (first + 1).remainder(r)
    )
    return turned / torch.hypot(vx, vy).clamp_min(1e-6)
