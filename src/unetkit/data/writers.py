"""Writing images and class-index masks losslessly, each file atomically (``files.py``).

Masks are single-channel palette PNGs whose pixel values are the class indices (the palette
only colours them); images are PNG or TIFF in their own dtype, or ``.npy`` for what an image
format cannot hold (float, N channels). :mod:`unetkit.data.imageio` reads both back exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import UnetkitError
from ..files import atomic_path

if TYPE_CHECKING:
    from .largeimage import PixelSize

PathLike = str | os.PathLike


def _full_palette(palette: Sequence[Sequence[int]]) -> list[int]:
    from ..palette import make_palette

    full = [list(c) for c in make_palette(256)]
    for i, colour in enumerate(palette[:256]):
        full[i] = [int(v) for v in colour]
    return [v for colour in full for v in colour]


def write_mask(
    path: PathLike,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    pixel_size: PixelSize | None = None,
) -> None:
    """Atomically write a single-channel palette PNG whose pixel values are the class indices.

    Args:
        path: output ``.png`` path.
        mask: (H, W) integer class indices in 0..255 (255 is the usual ignore index).
        palette: RGB colour per class index; unlisted indices get the VOC colour map.
        pixel_size: the physical size of a pixel, stored in the PNG's pHYs chunk (pixels per
            metre, rounded to whole pixels: PNG's precision).

    Raises:
        UnetkitError: a non-integer mask, wrong shape, or values outside 0..255.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise UnetkitError(f"{path}: mask must be (H, W) integers, got {mask.dtype} {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise UnetkitError(
            f"{path}: mask values must be in 0..255 for a palette PNG, "
            f"found {int(mask.min())}..{int(mask.max())}"
        )
    height, width = mask.shape
    raw = np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    img = Image.frombytes("P", (width, height), raw)
    img.putpalette(_full_palette(palette))
    extra = {}
    if pixel_size is not None:  # Pillow writes dots per inch as pixels per metre
        extra["dpi"] = tuple(25400 / um for um in pixel_size.micrometres())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", **extra)


def write_image(path: PathLike, array: np.ndarray) -> None:
    """Atomically write an image losslessly (PNG; ``.npy`` for N-channel or float arrays).

    Args:
        path: output path (``.png``, ``.tif`` or ``.npy``).
        array: (H, W) or (H, W, C) uint8 / uint16 (C in 1, 3, 4); any array for ``.npy``.

    Raises:
        UnetkitError: a dtype or channel count the format cannot store losslessly.
    """
    path = Path(path)
    array = np.asarray(array)
    if path.suffix.lower() == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        return
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype not in (np.uint8, np.uint16) or channels not in (1, 3, 4):
        raise UnetkitError(
            f"{path}: cannot store {array.dtype} with {channels} channels as an image; "
            "use uint8/uint16 with 1, 3 or 4 channels, or a .npy file"
        )
    with atomic_path(path) as tmp:
        if array.dtype == np.uint16 and channels > 1:
            import cv2

            bgr = array[:, :, [2, 1, 0, 3][:channels]]
            ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(bgr))
            if not ok:
                raise UnetkitError(f"{path}: cannot encode a 16-bit colour image")
            tmp.write_bytes(buf.tobytes())
        else:
            img = Image.fromarray(array)  # uint16 (H, W) -> I;16, uint8 -> L / RGB / RGBA
            img.save(tmp, format="TIFF" if path.suffix.lower() in (".tif", ".tiff") else "PNG")
