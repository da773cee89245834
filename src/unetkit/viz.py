"""Pictures for people: palettes, colour masks, overlays with contours and legends, panels and
object overlays. Every image function returns (H, W, 3) uint8 RGB (charts: ``unetkit.plots``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from .errors import UnetkitError
from .files import atomic_path
from .palette import make_palette

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BAND_ROWS = 64  # overlay blends this many rows at a time: float buffers of a band only


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any (H, W), (H, W, 1|3|4+) uint8/uint16/float image -> (H, W, 3) uint8 for display.

    uint16 is scaled by 255/65535, floats are taken as [0, 1] (min-max scaled when outside).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] != 3:
        image = image[:, :, :3] if image.shape[2] > 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    data = np.nan_to_num(image.astype(np.float64))
    if data.size and (data.min() < 0 or data.max() > 1):
        low, high = data.min(), data.max()
        data = (data - low) / (high - low) if high > low else np.zeros_like(data)
    return np.rint(data * 255).astype(np.uint8)


def _lut(palette: Sequence[Sequence[int]], size: int) -> np.ndarray:
    lut = np.asarray(make_palette(max(size, len(palette))), dtype=np.uint8)
    if len(palette):
        lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:, :3]
    return lut


def colorize(
    mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> np.ndarray:
    """Colour a class-index mask.

    Args:
        mask: (H, W) non-negative integer class indices.
        palette: colour per class; indices beyond it get the VOC colour map.
        ignore_index: pixels with this value are white.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    mask = _indices(mask)
    if mask.size and mask.min() < 0:
        raise UnetkitError(f"mask has negative values ({int(mask.min())}); cannot colour it")
    lut = _lut(palette, int(mask.max()) + 1 if mask.size else 1)
    rgb = lut[mask]
    rgb[mask == ignore_index] = _WHITE
    return rgb


def _indices(mask: np.ndarray) -> np.ndarray:
    """An integer mask as it is (a uint8 mask needs no int64 copy of 8 bytes a pixel)."""
    mask = np.asarray(mask)
    return mask if mask.dtype.kind in "iu" else mask.astype(np.int64)


def _text_size(text: str, scale: float) -> tuple[int, int]:
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    return w, h + base


def _legend(names: list[str], colours: Sequence[tuple[int, ...]], height: int) -> np.ndarray:
    """A white-on-dark strip of colour swatches and names, wrapped into columns to fit."""
    row = int(np.clip(height // max(len(names), 1), 14, 22))
    scale = row / 40.0
    per_col = max(1, (height - 4) // row)
    columns = [list(range(i, min(i + per_col, len(names)))) for i in range(0, len(names), per_col)]
    col_widths = [max(_text_size(names[i], scale)[0] for i in col) + row + 12 for col in columns]
    strip = np.full((height, sum(col_widths) + 4, 3), 32, dtype=np.uint8)
    x0 = 4
    for col, width in zip(columns, col_widths):
        for r, i in enumerate(col):
            y = 2 + r * row
            cv2.rectangle(strip, (x0, y + 2), (x0 + row - 5, y + row - 3), colours[i], -1)
            cv2.rectangle(strip, (x0, y + 2), (x0 + row - 5, y + row - 3), (200, 200, 200), 1)
            text_y = y + row - 3 - max(1, row // 6)
            cv2.putText(strip, names[i], (x0 + row, text_y), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
        x0 += width
    return strip


def draw_contours(
    rgb: np.ndarray, mask: np.ndarray, lut: np.ndarray, min_area: float = 0, thickness: int = 1
) -> np.ndarray:
    """Draw the outline of every region of every class > 0 (regions under ``min_area`` skipped).

    Args:
        rgb: (H, W, 3) uint8 image, drawn on in place.
        mask: (H, W) int class indices.
        lut: (K, 3) uint8 colour per class.
        min_area: regions with ``cv2.contourArea`` below this are skipped (10 hides specks).
        thickness: line width in pixels.

    Returns:
        ``rgb``.
    """
    for cls in np.unique(mask):
        if cls <= 0 or cls >= len(lut):
            continue
        binary = (mask == cls).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        kept = [c for c in contours if cv2.contourArea(c) >= min_area]
        colour = tuple(int(v) for v in np.maximum(lut[cls], 64))  # keep dark colours visible
        cv2.drawContours(rgb, kept, -1, colour, thickness)
    return rgb


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    contours: bool = True,
    min_area: float = 0,
    legend: bool = False,
    ignore_index: int = 255,
) -> np.ndarray:
    """The image with class colours blended in, region outlines and optionally a legend.

    Args:
        image: (H, W) or (H, W, C) image of any dtype (see :func:`to_rgb8`).
        mask: (H, W) int class indices; 0 (background) leaves the image untouched.
        palette: colour per class.
        alpha: weight of the class colour in the blend.
        class_names: names for the legend (index = class).
        contours: draw each region's outline in its class colour.
        min_area: skip outlines of regions smaller than this many pixels.
        legend: append a legend strip on the right (needs ``class_names``) listing the classes
            present in ``mask`` (background always); without it the output has the image's size.
        ignore_index: these pixels are blended with white and listed as "ignore".

    Returns:
        (H, W, 3) uint8 RGB, or (H, W + legend width, 3) with ``legend``.
    """
    rgb = to_rgb8(image)
    mask = _indices(mask)
    if rgb.shape[:2] != mask.shape:
        raise UnetkitError(f"overlay: image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    lut = _lut(palette, int(mask.max()) + 1 if mask.size else 1)
    out = np.empty(rgb.shape, np.uint8)  # C order: OpenCV draws on it
    for y in range(0, mask.shape[0], _BAND_ROWS):  # float32 temporaries of one band
        band, pixels = mask[y : y + _BAND_ROWS], rgb[y : y + _BAND_ROWS]
        colours = lut[np.clip(band, 0, len(lut) - 1)].astype(np.float32)
        colours[band == ignore_index] = _WHITE
        blend = pixels.astype(np.float32) * (1 - alpha) + colours * alpha
        out[y : y + _BAND_ROWS] = np.where((band > 0)[:, :, None], np.rint(blend), pixels)
    if contours:
        thickness = max(1, round(min(mask.shape) / 300))
        draw_contours(out, np.where(mask == ignore_index, 0, mask), lut, min_area, thickness)
    if legend and class_names:
        present = np.bincount(mask[(mask >= 0) & (mask < len(class_names))].ravel(),
                              minlength=len(class_names)) > 0  # fmt: skip
        shown = [i for i in range(len(class_names)) if i == 0 or present[i]]
        names = [f"{i} {class_names[i]}" for i in shown]
        swatches = [tuple(int(v) for v in lut[i]) for i in shown]
        if (mask == ignore_index).any():
            names.append(f"{ignore_index} ignore")
            swatches.append(_WHITE)
        out = np.concatenate([out, _legend(names, swatches, mask.shape[0])], axis=1)
    return out


def panel(images: Sequence[np.ndarray], titles: Sequence[str]) -> np.ndarray:
    """Tiles side by side, each under a title bar; shorter tiles are padded with black.

    Args:
        images: arrays (H_i, W_i) or (H_i, W_i, C) of any dtype.
        titles: one title per image.

    Returns:
        (bar + max H_i, sum W_i + gaps, 3) uint8 RGB.
    """
    if len(images) != len(titles):
        raise ValueError(f"panel got {len(images)} images but {len(titles)} titles")
    tiles = [to_rgb8(im) for im in images]
    height = max(t.shape[0] for t in tiles)
    bar = 22
    gap = np.full((height + bar, 4, 3), 255, dtype=np.uint8)
    columns = []
    for tile, title in zip(tiles, titles):
        column = np.zeros((height + bar, tile.shape[1], 3), dtype=np.uint8)
        column[:bar] = 48
        column[bar : bar + tile.shape[0]] = tile
        scale = min(0.5, 0.9 * tile.shape[1] / max(_text_size(title, 1.0)[0], 1))
        cv2.putText(column, title, (3, bar - 6), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
        columns.extend([column, gap])
    return np.concatenate(columns[:-1], axis=1)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Atomically write an (H, W, 3) or (H, W) uint8 image as PNG."""
    from PIL import Image

    array = np.asarray(rgb)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise UnetkitError(
            f"{path}: a PNG picture must be (H, W[, 3]) uint8; got {array.shape} {array.dtype}"
        )
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


_GOLDEN = 0.6180339887498949  # consecutive ids get hues far apart


def object_colours(ids: np.ndarray) -> np.ndarray:
    """A fixed colour per object id, the same every run: hue stepped by the golden ratio,
    saturation and value from a multiplicative hash of the id (never dark, never grey).

    Args:
        ids: integer ids, any shape.

    Returns:
        ``ids.shape + (3,)`` uint8 RGB.
    """
    ids = np.asarray(ids).astype(np.uint64)
    hashed = (ids * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)  # Knuth: high bits mix
    hue = np.mod(ids.astype(np.float64) * _GOLDEN, 1.0) * 6.0  # in sectors of 60 degrees
    sat = 0.55 + 0.4 * ((hashed >> np.uint64(24)).astype(np.float64) / 255.0)
    val = 0.8 + 0.2 * (((hashed >> np.uint64(16)) & np.uint64(0xFF)).astype(np.float64) / 255.0)
    rgb = np.empty(ids.shape + (3,), np.float64)
    for channel, n in enumerate((5.0, 3.0, 1.0)):  # HSV -> RGB, one channel at a time
        k = np.mod(n + hue, 6.0)
        rgb[..., channel] = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.rint(rgb * 255).astype(np.uint8)


def object_boundaries(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another id (background, another object, or outside
    the image): outlines inside each object, so touching objects show a line between them.

    Returns:
        (H, W) bool.
    """
    labels = np.asarray(labels)
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return edge & (labels > 0)


def object_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.45,
    contour_colour: tuple[int, int, int] = (255, 255, 0),
) -> np.ndarray:
    """The image with each object blended in its own colour (``object_colours``) and every
    object's outline drawn (``object_boundaries``); background pixels are left as they are.

    Args:
        image: (H, W) or (H, W, C) image of any dtype (see :func:`to_rgb8`).
        labels: (H, W) integer object ids, 0 = background (any ids, up to millions).
        alpha: weight of the object colour in the blend.
        contour_colour: RGB of the outlines.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        UnetkitError: labels that are not (H, W) non-negative integers of the image's size.
    """
    rgb = to_rgb8(image)
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise UnetkitError(f"object overlay: labels must be (H, W) integers; got {labels.dtype}")
    if rgb.shape[:2] != labels.shape:
        raise UnetkitError(
            f"object overlay: image {rgb.shape[:2]} and labels {labels.shape} differ in size"
        )
    if labels.size and labels.min() < 0:
        raise UnetkitError(f"object overlay: ids must be >= 0; found {int(labels.min())}")
    inside = labels > 0
    if not inside.any():
        return rgb.copy()
    top = int(labels.max())
    if top < (1 << 16) + 2 * labels.size:  # a colour table indexed by id
        colours = object_colours(np.arange(top + 1))[labels]
    else:  # sparse huge ids: colour only the ids present
        present, index = np.unique(labels, return_inverse=True)
        colours = object_colours(present)[index.reshape(labels.shape)]
    blend = rgb.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where(inside[:, :, None], np.rint(blend), rgb).astype(np.uint8)
    out[object_boundaries(labels)] = contour_colour
    return out
