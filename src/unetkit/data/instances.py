"""Instance label images in and out: 0 = background, 1..N = objects.

Written as a 16-bit PNG while the largest id fits (``NAME_instances.png``), as a 32-bit TIFF
beyond 65535 (``NAME_instances.tif``); read from any lossless single-channel integer image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UnetkitError
from ..files import atomic_path
from .imageio import read_mask

PNG_MAX_ID = 65535


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """An instance label image as (H, W) int32 ids (0 background).

    Raises:
        UnetkitError: unreadable file, a colour or lossy image, negative or non-integer ids.
    """
    path = Path(path)
    labels = read_mask(path)  # exact integer decode; refuses JPEG and colour images
    if labels.size and labels.min() < 0:
        raise UnetkitError(f"{path}: instance ids must be >= 0; found {int(labels.min())}")
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise UnetkitError(f"{path}: instance ids above {np.iinfo(np.int32).max}")
    return labels.astype(np.int32)


def instances_path(out_dir: str | os.PathLike, stem: str, max_id: int) -> Path:
    """``NAME_instances.png`` when ids fit 16 bits, else ``NAME_instances.tif``."""
    suffix = ".png" if max_id <= PNG_MAX_ID else ".tif"
    return Path(out_dir) / f"{stem}_instances{suffix}"


def write_instances(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Atomically write ids losslessly: uint16 PNG (ids <= 65535) or int32 TIFF (``.tif``).

    Raises:
        UnetkitError: a non-integer or non-2-D array, negative ids, or ids over 65535 for PNG.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise UnetkitError(f"{path}: instances must be (H, W) integers; got {labels.dtype}")
    top = int(labels.max()) if labels.size else 0
    if labels.size and labels.min() < 0:
        raise UnetkitError(f"{path}: instance ids must be >= 0")
    tiff = path.suffix.lower() in (".tif", ".tiff")
    if not tiff and top > PNG_MAX_ID:
        raise UnetkitError(f"{path}: {top} objects do not fit a 16-bit PNG; write a .tif")
    array = labels.astype(np.int32 if tiff else np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="TIFF" if tiff else "PNG")
