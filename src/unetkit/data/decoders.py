"""Pixel decoding behind :mod:`unetkit.data.imageio`'s readers: Pillow or OpenCV, exactly.

Pillow decodes most files; 16-bit colour PNG and TIFF go through OpenCV, because Pillow would
bring them down to 8 bits per channel. OpenCV ignores the EXIF orientation, so it is applied
here as Pillow's ``exif_transpose`` would (labelme shows, and annotates, the rotated image).
The header checks (sizes, frames, decompression bombs) come first, in ``imageio.open_image``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image, ImageOps

from ..errors import UnetkitError

if TYPE_CHECKING:
    from PIL.TiffImagePlugin import TiffImageFile

log = logging.getLogger(__name__)

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")  # Pillow's 16-bit grey modes

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transform that shows the stored (H, W, ...) pixels upright
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def reason(exc: BaseException) -> str:
    """An exception as a short phrase for a one-line message: its type and text."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def decode_pixels(img: Image.Image, data: bytes, name: str) -> np.ndarray:
    """The pixels of an image whose header :func:`~unetkit.data.imageio.open_image` checked.

    Args:
        img: the opened (not loaded) PIL image of ``data``.
        data: the file's content.
        name: the file, for messages.

    Returns:
        (H, W, C) uint8, uint16 or float32 array, EXIF orientation applied, alpha dropped.

    Raises:
        UnetkitError: truncated, corrupt or unsupported data.
    """
    if _needs_cv2(img, data):
        upright = _ORIENT[_orientation(img)](_decode_with_cv2(data, name)[:, :, :3])
        return np.ascontiguousarray(upright)
    return _decode_with_pil(img, data, name)


def _needs_cv2(img: Image.Image, data: bytes) -> bool:
    """16-bit colour PNG and TIFF: Pillow would decode them to 8 bits per channel."""
    if img.format == "PNG":
        return _is_16bit_colour_png(data)
    if img.format == "TIFF" and img.mode in ("RGB", "RGBA", "RGBX"):
        bits = cast("TiffImageFile", img).tag_v2.get(258, 8)  # BitsPerSample
        return any(int(b) > 8 for b in (bits if isinstance(bits, tuple) else (bits,)))
    return False


def _is_16bit_colour_png(data: bytes) -> bool:
    """PNG IHDR: bit depth at byte 24, colour type (2 RGB, 6 RGBA) at byte 25."""
    is_png = data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25
    return is_png and data[24] == 16 and data[25] in (2, 6)


def _orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # unreadable EXIF: shown as stored, as viewers do
        return 1
    return value if value in _ORIENT else 1


@contextlib.contextmanager
def _captured_fd2() -> Iterator[list[str]]:
    """Send what native code writes to file descriptor 2 meanwhile into a list, not the terminal.

    OpenCV's libpng prints ``libpng error: ...`` (and OpenCV its ``[ WARN ]`` lines) straight
    to fd 2 for a corrupt file, below Python's ``sys.stderr``; the error is reported in one
    line anyway. Yields a list that holds the captured text once the block is left.
    """
    captured: list[str] = []
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # what Python wrote before goes where it was going
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _decode_with_cv2(data: bytes, name: str) -> np.ndarray:
    import cv2

    with _captured_fd2() as noise:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    said = [line.strip() for line in "".join(noise).splitlines() if line.strip()]
    if said:
        log.debug("%s: OpenCV said: %s", name, " | ".join(said))
    if array is None:
        errors = [line for line in said if "error" in line.lower()]
        raise UnetkitError(f"{name}: cannot decode image" + (f" ({errors[-1]})" if errors else ""))
    if array.ndim == 2:
        return array[:, :, None]
    return array[:, :, 2::-1].copy() if array.shape[2] >= 3 else array  # BGR(A) -> RGB


def _decode_with_pil(img: Image.Image, data: bytes, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: not errors
            img.load()
            return _pil_to_array(ImageOps.exif_transpose(img), name)
    except UnetkitError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        if img.format == "TIFF" and "truncated" not in str(exc).lower():
            try:  # sample layouts Pillow cannot represent (the size is checked already)
                return _decode_with_cv2(data, name)
            except Exception:
                pass
        raise UnetkitError(
            f"{name}: cannot read image: truncated or corrupt {img.format} data ({reason(exc)})"
        ) from None


def _pil_to_array(img: Image.Image, name: str) -> np.ndarray:
    """PIL image (already EXIF-transposed) -> (H, W, C) array, alpha dropped."""
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")  # what Pillow asks for; the alpha is dropped below
    mode = img.mode
    if mode in ("1", "L", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
        img = img.convert("L" if mode == "1" or mode.startswith("L") else "RGB")
        mode = img.mode
    array = np.asarray(img)
    if mode in SIXTEEN_BIT:
        array = array.astype(np.uint16)
    elif mode == "I":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise UnetkitError(f"{name}: 32-bit integer image with values outside 0..65535")
        array = array.astype(np.uint16)
    elif mode == "F":
        array = array.astype(np.float32)
    elif mode not in ("L", "RGB"):
        raise UnetkitError(f"{name}: unsupported image mode {mode!r}")
    return array[:, :, None] if array.ndim == 2 else array
