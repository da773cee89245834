"""Reading and writing images and class-index masks exactly (no silent lossy conversions).

Images come back as ``(H, W, C)`` arrays (uint8, uint16 for 16-bit files, float32 for float
TIFFs and ``.npy`` stacks) with the EXIF orientation applied, because annotation tools such as
labelme show (and annotate) the rotated image. Masks come back as ``(H, W)`` int64 class indices,
decoded per PIL mode so that index values are never remapped (a ``convert("L")`` on a palette
mask would turn indices into grey levels).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from ..errors import UnetkitError
from ..files import atomic_path

if TYPE_CHECKING:
    import torch

    from ..config import DataConfig

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _is_16bit_colour_png(data: bytes) -> bool:
    """PNG IHDR: bit depth at byte 24, colour type (2 RGB, 6 RGBA) at byte 25."""
    is_png = data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25
    return is_png and data[24] == 16 and data[25] in (2, 6)


def _decode_with_cv2(data: bytes, name: str) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UnetkitError(f"{name}: cannot decode image")
    if array.ndim == 2:
        return array[:, :, None]
    return array[:, :, 2::-1].copy() if array.shape[2] >= 3 else array  # BGR(A) -> RGB


def _pil_to_array(img: Image.Image, name: str) -> np.ndarray:
    """PIL image (already EXIF-transposed) -> (H, W, C) array, alpha dropped."""
    mode = img.mode
    if mode in ("1", "L", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
        img = img.convert("L" if mode == "1" or mode.startswith("L") else "RGB")
        mode = img.mode
    array = np.asarray(img)
    if mode in _SIXTEEN_BIT:
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


def decode_image(data: bytes, channels: int | None = None, name: str = "") -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, TIFF, BMP, ...) from bytes.

    Args:
        data: the encoded file content.
        channels: 1 grey, 3 RGB, None keeps what is stored (alpha is always dropped).
        name: shown in error messages (a file name).

    Returns:
        (H, W, C) uint8, uint16 (16-bit files) or float32 (float TIFF) array, EXIF orientation
        applied.

    Raises:
        UnetkitError: corrupt or unsupported data, or an impossible channel conversion.
    """
    name = name or "<image bytes>"
    if _is_16bit_colour_png(data):
        return match_channels(_decode_with_cv2(data, name)[:, :, :3], channels, name)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            array = _pil_to_array(img, name)
    except UnetkitError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt files
        try:  # e.g. multi-channel or 16-bit colour TIFFs that PIL cannot represent
            array = _decode_with_cv2(data, name)
        except Exception:
            raise UnetkitError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return match_channels(array, channels, name)


def read_image(path: PathLike, channels: int | None = None) -> np.ndarray:
    """Read an image file (or an ``.npy`` stack of shape (H, W) or (H, W, C)).

    Args:
        path: image file.
        channels: 1 grey, 3 RGB, None keeps what is stored (L -> 1, RGB -> 3, RGBA -> 3).

    Returns:
        (H, W, C) uint8 / uint16 / float32 array with the EXIF orientation applied.

    Raises:
        UnetkitError: missing, unreadable or corrupt file (the message names it).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise UnetkitError(f"{path}: cannot read array ({exc})") from exc
        if array.ndim not in (2, 3):
            raise UnetkitError(f"{path}: expected a (H, W) or (H, W, C) array, got {array.shape}")
        array = array[:, :, None] if array.ndim == 2 else array
        return match_channels(array, channels, str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnetkitError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    return decode_image(data, channels=channels, name=str(path))


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
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("LA", "PA"):
                img = img.getchannel(0)
                mode = img.mode
            array = np.asarray(img)
    except Exception as exc:
        raise UnetkitError(f"{name}: cannot read mask ({type(exc).__name__}: {exc})") from exc
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
    elif mode not in ("1", "L", "P", "I") + _SIXTEEN_BIT:
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


def _full_palette(palette: Sequence[Sequence[int]]) -> list[int]:
    from ..viz import make_palette

    full = [list(c) for c in make_palette(256)]
    for i, colour in enumerate(palette[:256]):
        full[i] = [int(v) for v in colour]
    return [v for colour in full for v in colour]


def write_mask(path: PathLike, mask: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Atomically write a single-channel palette PNG whose pixel values are the class indices.

    Args:
        path: output ``.png`` path.
        mask: (H, W) integer class indices in 0..255 (255 is the usual ignore index).
        palette: RGB colour per class index; unlisted indices get the VOC colour map.

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
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


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


write_rgb_png = write_image


def image_to_tensor(image: np.ndarray, cfg: DataConfig) -> torch.Tensor:
    """Turn an image into the network's normalised float input.

    Args:
        image: (H, W, C) or (H, W) uint8 / uint16 / float array (float assumed in [0, 1]).
        cfg: data config; ``channels`` (grey <-> RGB converted), ``mean`` and ``std`` (one entry
            broadcasts to every channel) are used.

    Returns:
        float32 tensor (C, H, W): ``(x / dtype_max - mean) / std``.

    Raises:
        UnetkitError: a channel count that cannot be converted, or mean/std of the wrong length.
    """
    import torch

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    image = match_channels(image, cfg.channels, "image")
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    channels = image.shape[2]
    stats = []
    for label, values in (("mean", cfg.mean), ("std", cfg.std)):
        if len(values) not in (1, channels):
            raise UnetkitError(f"{label} has {len(values)} entries for a {channels}-channel image")
        stats.append(np.asarray(values, dtype=np.float32))
    mean, std = stats
    # numpy on (H, W, C) then one transposing copy: fast whatever torch's thread settings
    array = image.astype(np.float32)
    array /= scale
    array -= mean
    array /= std
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (C, H, W)
