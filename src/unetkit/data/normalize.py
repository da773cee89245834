"""Intensity normalisation: the transform between an image's pixels and the network's input.

Every image is first scaled to [0, 1] (integers by their dtype's maximum, floats as they are),
then one of ``DataConfig.normalize``:

* ``image``: per image and channel, ``(x - mean) / std`` with the statistics of the *whole*
  image (microscopy, where exposure and stain vary from image to image);
* ``percentile``: per image and channel, ``(x - p1) / (p99.8 - p1)`` (robust to a few bright
  pixels; the 1 / 99.8 percentiles are CSBDeep's ``normalize`` defaults);
* ``dataset``: ``(x - mean) / std`` with the dataset's statistics (stored in ``DataConfig.mean``
  / ``std`` when training starts);
* ``fixed``: ``(x - mean) / std`` with the configured ``mean`` / ``std`` (the identity by
  default); ``auto`` not yet resolved (checkpoints made before this field existed) means the
  same.

Per-image statistics always come from the whole image (subsampled with a fixed stride above
:data:`STATS_PIXELS` pixels), never from a training crop or a prediction tile, and are computed
by :func:`image_stats` in training, validation, prediction and evaluation alike.
:func:`normalization_stats` gives them for a whole image and :func:`image_to_tensor` applies
the transform (to the whole image, or to a crop or tile with the whole image's statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UnetkitError
from .imageio import match_channels

if TYPE_CHECKING:
    import torch

    from ..config import DataConfig

PER_IMAGE = ("image", "percentile")
STATS_PIXELS = 1 << 22  # statistics from at most ~4 M pixels (a fixed-stride subsample)
PERCENTILES = (1.0, 99.8)
_EPS = 1e-6


def unit_scale(image: np.ndarray) -> float:
    """The divisor that brings the image's dtype to [0, 1] (1 for floats)."""
    return float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0


def stats_step(height: int, width: int) -> int:
    """The stride of the statistics' subsample of an image of this size (1 up to
    :data:`STATS_PIXELS` pixels)."""
    return max(1, math.ceil(math.sqrt(height * width / STATS_PIXELS)))


def subsample(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (N, C) float32 pixels in [0, 1]: all of them, or a fixed-stride grid."""
    step = stats_step(*image.shape[:2])
    return grid_pixels(image[::step, ::step])


def grid_pixels(grid: np.ndarray) -> np.ndarray:
    """An already subsampled (h, w, C) grid as (N, C) float32 pixels in [0, 1] (images read
    by region, whose ``image[::step, ::step]`` is assembled band by band, come in here)."""
    return grid.reshape(-1, grid.shape[2]).astype(np.float32) / unit_scale(grid)


def image_stats(image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(shift, scale)`` of one whole (H, W, C) image for a per-image ``mode``.

    Returns None for the modes that do not depend on the image (``dataset``, ``fixed``).
    """
    if mode not in PER_IMAGE:
        return None
    return pixel_stats(subsample(image), mode)


def pixel_stats(pixels: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` per channel of (N, C) pixels in [0, 1] for a per-image ``mode``."""
    if mode == "image":
        shift = pixels.mean(0)
        scale = pixels.std(0)
    else:
        lo, hi = np.percentile(pixels, PERCENTILES, axis=0)
        shift, scale = lo, hi - lo
    return shift.astype(np.float32), np.maximum(scale, _EPS).astype(np.float32)


def channel_summary(pixels: np.ndarray) -> dict[str, list[float]]:
    """Mean, std and 1 / 99 percentiles per channel of :func:`subsample` pixels (N, C)."""
    p1, p99 = np.percentile(pixels, (1.0, 99.0), axis=0)
    return {
        "mean": [round(float(v), 5) for v in pixels.mean(0)],
        "std": [round(float(v), 5) for v in pixels.std(0)],
        "p1": [round(float(v), 5) for v in p1],
        "p99": [round(float(v), 5) for v in p99],
    }


def normalization_stats(image: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-image ``(shift, scale)`` of a whole image for ``cfg.normalize`` (None when the
    transform does not depend on the image); pass them to :func:`image_to_tensor` for its
    crops and tiles."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if cfg.normalize not in PER_IMAGE:
        return None
    return image_stats(match_channels(image, cfg.channels, "image"), cfg.normalize)


def image_to_tensor(
    image: np.ndarray, cfg: DataConfig, stats: tuple[np.ndarray, np.ndarray] | None = None
) -> torch.Tensor:
    """Turn an image into the network's normalised float input (this module's transform).

    Args:
        image: (H, W, C) or (H, W) uint8 / uint16 / float array (float assumed in [0, 1]).
        cfg: data config; ``channels`` (grey <-> RGB converted), ``normalize``, ``mean`` and
            ``std`` (one entry broadcasts to every channel) are used.
        stats: per-image ``(shift, scale)`` from :func:`normalization_stats` of the *whole*
            image, for the per-image modes when ``image`` is a crop or a tile of it; None
            computes them from ``image`` itself.

    Returns:
        float32 tensor (C, H, W): ``(x / dtype_max - shift) / scale``.

    Raises:
        UnetkitError: a channel count that cannot be converted, or mean/std of the wrong length.
    """
    import torch

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    image = match_channels(image, cfg.channels, "image")
    channels = image.shape[2]
    if stats is None:
        stats = image_stats(image, cfg.normalize)
    given: tuple[np.ndarray | Sequence[float], ...] = (
        (cfg.mean, cfg.std) if stats is None else stats
    )
    checked = []
    for label, values in zip(("mean", "std"), given):
        if len(values) not in (1, channels):
            raise UnetkitError(f"{label} has {len(values)} entries for a {channels}-channel image")
        checked.append(np.asarray(values, dtype=np.float32))
    shift, scale = checked
    # numpy on (H, W, C) then one transposing copy: fast whatever torch's thread settings
    array = image.astype(np.float32)
    array /= unit_scale(image)
    array -= shift
    array /= scale
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (C, H, W)
