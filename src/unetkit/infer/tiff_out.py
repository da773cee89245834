"""The mask of an image read by region as ``NAME.tif`` (``unetkit.infer.large``).

The class-index mask as a tiled (``TIFF_TILE`` x ``TIFF_TILE``, 256), zlib-compressed BigTIFF
of the input's size (at the pyramid level predicted), with the model's palette as its colour
map and pyramid levels as SubIFDs (level ``k``: ``mask[::2**k, ::2**k]``, every ``2**k``-th
pixel as the OME-Zarr levels pick them, added until the longer side is at most
``zarr_out.PYRAMID_TOP``), so viewers can show it zoomed out. With a pixel size every level
carries its own as resolution tags (pixels per centimetre).

The mask arrives as strips of ``TIFF_TILE`` rows, each already compressed into its tiles
(``compress``): level 0 is those tiles as they are, and each further level is made from the
strips read again one at a time, so neither the mask nor a level is ever whole in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..data.largeimage import PixelSize, tiff_resolution
from ..files import atomic_path
from .zarr_out import level_shapes

TIFF_TILE = 256
_ZLIB_LEVEL = 6


def colormap(palette: list[list[int]]) -> np.ndarray:
    """A TIFF colour map (3, 256) uint16 from the model's palette (unused entries black)."""
    cmap = np.zeros((3, 256), np.uint16)
    for index, rgb in enumerate(palette[:256]):
        cmap[:, index] = [int(c) * 257 for c in rgb[:3]]
    return cmap


def compress(rows: np.ndarray, tile: int) -> list[bytes]:
    """One strip of mask rows (h <= tile, W) as its zlib-compressed TIFF tiles, row-major;
    edge tiles padded with 0."""
    width = rows.shape[1]
    padded = np.zeros((tile, -(-width // tile) * tile), np.uint8)
    padded[: rows.shape[0], :width] = rows
    return [
        zlib.compress(np.ascontiguousarray(padded[:, x0 : x0 + tile]).tobytes(), _ZLIB_LEVEL)
        for x0 in range(0, width, tile)
    ]


def decompress(tiles: list[bytes], height: int, width: int, tile: int) -> np.ndarray:
    """The (height, width) mask rows of a strip from its compressed tiles."""
    parts = [np.frombuffer(zlib.decompress(t), np.uint8).reshape(tile, tile) for t in tiles]
    return np.concatenate(parts, axis=1)[:height, :width]


def write_mask_tiff(
    target: Path,
    tiles: Iterator[bytes],
    strip_rows: Callable[[], Iterable[np.ndarray]],
    size: tuple[int, int],
    palette: list[list[int]],
    pixel_size: PixelSize | None = None,
) -> None:
    """Write ``NAME.tif`` (atomically).

    Args:
        target: the file.
        tiles: level 0's compressed tiles (``compress``), strip by strip, row-major.
        strip_rows: a new pass over the strips' rows (H, W) from the top, for each further
            pyramid level.
        size: the mask's (H, W).
        palette: the colour map's colours.
        pixel_size: the size of a level-0 pixel, or None.
    """
    import tifffile

    shapes = level_shapes(size)
    with atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for k, shape in enumerate(shapes):
            level = tiles if k == 0 else level_tiles(strip_rows(), 2**k, shape)
            scaled = pixel_size.scaled(2**k) if pixel_size is not None else None
            writer.write(
                level,
                shape=shape,
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                compression="zlib",
                photometric="palette",
                colormap=colormap(palette),
                metadata=None,
                subifds=len(shapes) - 1 if k == 0 else None,
                subfiletype=1 if k else 0,
                **(tiff_resolution(scaled) if scaled is not None else {}),
            )


def level_tiles(
    strip_rows: Iterable[np.ndarray], factor: int, shape: tuple[int, int]
) -> Iterator[bytes]:
    """The compressed TIFF tiles of the pyramid level ``mask[::factor, ::factor]`` (of
    ``shape``), row of tiles by row of tiles, from the strips' rows in order."""
    pending: list[np.ndarray] = []
    held = written = y0 = 0
    for rows in strip_rows:
        picked = rows[(-y0) % factor :: factor, ::factor].copy()  # not a view of the strip
        y0 += len(rows)
        if len(picked):
            pending.append(picked)
            held += len(picked)
        while held >= TIFF_TILE:
            band = np.concatenate(pending)
            yield from compress(band[:TIFF_TILE], TIFF_TILE)
            rest = band[TIFF_TILE:]
            pending, held, written = (
                ([rest] if len(rest) else []),
                len(rest),
                written + TIFF_TILE,
            )
    if held:
        yield from compress(np.concatenate(pending), TIFF_TILE)
    if written + held != shape[0]:
        raise ValueError(f"pyramid level {shape}: the strips gave {written + held} rows")
