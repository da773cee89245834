"""Reading images and class-index masks exactly (no silent lossy conversions).

Images come back as ``(H, W, C)`` arrays (uint8, uint16 for 16-bit files, float32 for float
TIFFs and ``.npy`` stacks) with the EXIF orientation applied, because annotation tools such as
labelme show (and annotate) the rotated image. Masks come back as ``(H, W)`` int64 class indices,
decoded per PIL mode so that index values are never remapped (a ``convert("L")`` on a palette
mask would turn indices into grey levels). Every file's header is checked before any pixel is
decoded (:func:`open_image`); the decoding itself is :mod:`unetkit.data.decoders`', the writing
:mod:`unetkit.data.writers`'.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UnetkitError
from .decoders import SIXTEEN_BIT, decode_pixels, reason

PathLike = str | os.PathLike

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])

# What a file starting like this is; Pillow reads them all, so when it cannot identify one the
# file is corrupt (and no other decoder is tried: none could check the declared size first).
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"RIFF": "WEBP",
}


def max_pixels() -> int | None:
    """The largest width x height read: Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 M pixels by
    default; set it to read bigger images, None for no limit). Checked from the header."""
    return Image.MAX_IMAGE_PIXELS


def _bomb(
    name: str, pixels: int, size: tuple[int, int] | None = None, what: str = "image"
) -> UnetkitError:
    dims = f"{size[0]}x{size[1]} (WxH) = " if size else ""
    return UnetkitError(
        f"{name}: cannot read {what}: it declares {dims}{pixels:,} pixels, over the limit of "
        f"{max_pixels():,} (a decompression bomb?); refused before decoding"
    )


def _not_identified(data: bytes) -> str:
    if not data:
        return "empty file (0 bytes)"
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if not (width and height):
            return f"PNG header declares an empty image ({width}x{height}, WxH)"
    for magic, fmt in _SIGNATURES.items():
        if data.startswith(magic):
            return f"corrupt {fmt} file (its header cannot be read)"
    return "not an image file (format not recognised)"


def open_image(data: bytes, name: str, what: str = "image") -> Image.Image:
    """Parse an encoded image's header with Pillow, decoding no pixels, and check it.

    Args:
        data: the file's content.
        name: the file, for messages.
        what: ``image`` or ``mask``, for messages.

    Returns:
        The opened (not loaded) PIL image.

    Raises:
        UnetkitError: an empty, unrecognised or corrupt file, a declared size of zero or over
            :func:`max_pixels` (a decompression bomb is refused here, before decoding), or more
            than one frame (a multi-page TIFF or an animated GIF: which frame would be meant?).
    """
    fail = f"{name}: cannot read {what}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: checked below, more strictly
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise _bomb(name, int(found.group(1)) if found else 0, what=what) from None
        except UnidentifiedImageError:
            raise UnetkitError(f"{fail}: {_not_identified(data)}") from None
        except Exception as exc:  # Pillow raises many types for corrupt headers
            raise UnetkitError(f"{fail}: corrupt header ({reason(exc)})") from None
        width, height = img.size
        if width <= 0 or height <= 0:
            img.close()
            raise UnetkitError(f"{fail}: it declares an empty image ({width}x{height}, WxH)")
        limit = max_pixels()
        if limit and width * height > limit:
            img.close()
            raise _bomb(name, width * height, (width, height), what)
        try:
            frames = int(getattr(img, "n_frames", 1))
        except Image.DecompressionBombError:
            img.close()
            raise _bomb(name, 0, what=what) from None
        except Exception as exc:
            img.close()
            raise UnetkitError(f"{fail}: corrupt {img.format} file ({reason(exc)})") from None
    if frames > 1:
        fmt = img.format
        img.close()
        where = (
            "`unetkit predict` predicts TIFF stacks plane by plane, but here unetkit reads"
            if fmt == "TIFF"
            else "unetkit reads"
        )
        raise UnetkitError(
            f"{fail}: {frames} frames (a multi-page or animated {fmt}); {where} one image "
            "per file: save each frame as its own file"
        )
    return img


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    """``array``, or one ``UnetkitError`` line naming ``name`` when a float image holds NaN or
    infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise UnetkitError(f"{name}: cannot use image: {bad} NaN/infinite pixel values")
    return array


def match_channels(image: np.ndarray, channels: int | None, name: str = "") -> np.ndarray:
    """Convert an ``(H, W, C)`` image to ``channels`` channels (grey <-> RGB only).

    Args:
        image: (H, W, C) array of any dtype.
        channels: wanted channel count, or None / 0 to keep what is there.
        name: file name for the error message.

    Returns:
        (H, W, channels) array of the same dtype (grey from RGB uses the BT.601 luma weights).

    Raises:
        UnetkitError: for any conversion other than 1 -> 3 or 3 -> 1.
    """
    have = image.shape[2]
    if not channels or channels == have:  # None / 0: keep what the file has
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        grey = image.astype(np.float64) @ _LUMA
        if np.issubdtype(image.dtype, np.integer):
            grey = np.clip(np.rint(grey), 0, np.iinfo(image.dtype).max)
        return grey.astype(image.dtype)[:, :, None]
    raise UnetkitError(f"{name}: image has {have} channels, expected {channels}")


def decode_image(
    data: bytes, channels: int | None = None, name: str = "", finite: bool = True
) -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, TIFF, BMP, ...) from bytes.

    Args:
        data: the encoded file content.
        channels: 1 grey, 3 RGB, None keeps what is stored (alpha is always dropped).
        name: shown in error messages (a file name).
        finite: refuse NaN and infinite values (False returns them, e.g. to count them).

    Returns:
        (H, W, C) uint8, uint16 (16-bit files) or float32 (float TIFF) array, EXIF orientation
        applied.

    Raises:
        UnetkitError: corrupt, truncated or unsupported data, a size over :func:`max_pixels`
            (refused from the header, before decoding), several frames, NaN or infinite
            values, or an impossible channel conversion.
    """
    name = name or "<image bytes>"
    img = open_image(data, name)  # header checks: size (bombs), frames, format
    with img:
        array = decode_pixels(img, data, name)
    return match_channels(check_finite(array, name) if finite else array, channels, name)


def read_image(path: PathLike, channels: int | None = None, finite: bool = True) -> np.ndarray:
    """Read an image file (or an ``.npy`` stack of shape (H, W) or (H, W, C)).

    Args:
        path: image file.
        channels: 1 grey, 3 RGB, None keeps what is stored (L -> 1, RGB -> 3, RGBA -> 3).
        finite: refuse NaN and infinite values (False returns them, e.g. to count them).

    Returns:
        (H, W, C) uint8 / uint16 / float32 array with the EXIF orientation applied.

    Raises:
        UnetkitError: missing, unreadable or corrupt file (the message names it).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _read_npy(path)
        array = array[:, :, None] if array.ndim == 2 else array
        array = check_finite(array, str(path)) if finite else array
        return match_channels(array, channels, str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnetkitError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    return decode_image(data, channels=channels, name=str(path), finite=finite)


def _read_npy(path: Path) -> np.ndarray:
    """An ``.npy`` array, its header checked first: shape, size, no objects, enough data."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            data_bytes = os.fstat(fh.fileno()).st_size - fh.tell()
    except OSError as exc:
        raise UnetkitError(f"{path}: cannot read array ({exc.strerror or exc})") from None
    except Exception as exc:  # ValueError and friends for a bad header
        raise UnetkitError(f"{path}: not a readable .npy array ({reason(exc)})") from None
    if dtype.hasobject:
        raise UnetkitError(f"{path}: array of Python objects (a pickle); refused")
    if len(shape) not in (2, 3):
        raise UnetkitError(f"{path}: expected a (H, W) or (H, W, C) array, got {shape}")
    limit = max_pixels()
    if limit and shape[0] * shape[1] > limit:
        raise _bomb(str(path), shape[0] * shape[1], (shape[1], shape[0]))
    if not all(shape):
        raise UnetkitError(f"{path}: empty array {shape}")
    need = int(np.prod(shape)) * dtype.itemsize
    if data_bytes < need:
        raise UnetkitError(
            f"{path}: truncated array: shape {shape} needs {need:,} bytes, the file holds "
            f"{data_bytes:,}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UnetkitError(f"{path}: cannot read array ({reason(exc)})") from None


def _map_colours(rgb: np.ndarray, colormap: Mapping | Sequence, name: str) -> np.ndarray:
    """(H, W, 3) colour mask -> class indices via a colour map (dict colour->index or list)."""
    if isinstance(colormap, Mapping):
        items = [(tuple(int(v) for v in k), int(i)) for k, i in colormap.items()]
    else:
        items = [(tuple(int(v) for v in c), i) for i, c in enumerate(colormap)]
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for (r, g, b), _ in items], dtype=np.int64)
    values = np.array([i for _, i in items], dtype=np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, codes), 0, max(len(keys) - 1, 0))
    known = keys[pos] == codes if len(keys) else np.zeros(codes.shape, bool)
    if not known.all():
        bad = np.unique(codes[~known])[:5].tolist()
        listed = ", ".join(str(((c >> 16) & 255, (c >> 8) & 255, c & 255)) for c in bad)
        raise UnetkitError(f"{name}: mask colours not in the colour map: {listed}")
    return values[pos]


def decode_mask(
    data: bytes, name: str = "", colormap: Mapping | Sequence | None = None
) -> np.ndarray:
    """Decode a class-index mask from bytes; see :func:`read_mask`."""
    name = name or "<mask bytes>"
    img = open_image(data, name, "mask")  # header checks: size (bombs), frames, format
    if img.format == "JPEG":
        img.close()
        raise UnetkitError(
            f"{name}: cannot use mask: lossy JPEG mask: class indices are not exact; "
            "store masks as PNG"
        )
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            mode = img.mode
            if mode in ("LA", "PA"):
                img = img.getchannel(0)
                mode = img.mode
            array = np.asarray(img)
    except Exception as exc:
        raise UnetkitError(
            f"{name}: cannot read mask: truncated or corrupt data ({reason(exc)})"
        ) from None
    if mode in ("RGB", "RGBA"):
        rgb = array[:, :, :3]
        if colormap is not None:
            return _map_colours(rgb, colormap, name)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)  # grey levels stored as RGB
        raise UnetkitError(
            f"{name}: RGB colour mask; pass a colour map or store class indices "
            "(single-channel or palette PNG)"
        )
    if mode == "F":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise UnetkitError(f"{name}: float mask with non-integer or non-finite values")
    elif mode not in ("1", "L", "P", "I") + SIXTEEN_BIT:
        raise UnetkitError(f"{name}: unsupported mask mode {mode!r}")
    return array.astype(np.int64)


def read_mask(path: PathLike, colormap: Mapping | Sequence | None = None) -> np.ndarray:
    """Read a class-index mask exactly (P, L, 1, I, I;16 modes; never via ``convert('L')``).

    Args:
        path: mask file (PNG, TIFF, BMP, ...).
        colormap: for RGB colour masks, a dict ``(r, g, b) -> class index`` or a list of
            colours whose position is the class index.

    Returns:
        (H, W) int64 class indices (mode ``1`` gives 0/1).

    Raises:
        UnetkitError: unreadable file, an RGB colour mask without a colour map, or colours that
            the colour map lacks.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnetkitError(f"{path}: cannot read mask ({exc.strerror or exc})") from exc
    return decode_mask(data, str(path), colormap)
