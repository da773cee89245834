"""Prediction of images too large for memory: read by region, written band by band.

For a TIFF that ``unetkit.data.largeimage.streamable`` accepts, ``predict`` writes instead of
the full-size PNGs:

* ``NAME.tif``: the class-index mask as a tiled (256 x 256), zlib-compressed BigTIFF of the
  input's size (at the pyramid level predicted), with the model's palette as its colour map;
  tiles are written as the bands of rows come out of the network, so neither the image nor the
  mask is ever whole in memory;
* ``NAME_preview.png``: the image with the predicted classes blended in, at most 2048 px on its
  longer side (every ``step``-th pixel of the image and of the mask).

``summary.csv`` gets the usual row (class pixel counts summed over the bands). Both files are
written under temporary names and renamed into place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data.largeimage import LargeImage
from ..errors import UnetkitError
from ..files import atomic_path
from ..viz import overlay, save_png
from .predict import Predictor

TIFF_TILE = 256


def _colormap(palette: list[list[int]]) -> np.ndarray:
    """A TIFF colour map (3, 256) uint16 from the model's palette (unused entries black)."""
    cmap = np.zeros((3, 256), np.uint16)
    for index, rgb in enumerate(palette[:256]):
        cmap[:, index] = [int(c) * 257 for c in rgb[:3]]
    return cmap


def _tiles(
    bands: Iterator[tuple[int, int, np.ndarray]], height: int, width: int, tile: int
) -> Iterator[np.ndarray]:
    """Bands of mask rows regrouped into ``tile`` x ``tile`` TIFF tiles, row-major; edge tiles
    padded with 0. At most one strip of ``tile`` rows (plus one band) is held."""
    pending: list[np.ndarray] = []
    held = 0
    for _, _, band in bands:
        pending.append(band)
        held += band.shape[0]
        while held >= tile:
            rows = np.concatenate(pending, axis=0)
            yield from _strip_tiles(rows[:tile], width, tile)
            rest = rows[tile:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield from _strip_tiles(np.concatenate(pending, axis=0), width, tile)


def _strip_tiles(strip: np.ndarray, width: int, tile: int) -> Iterator[np.ndarray]:
    padded = np.zeros((tile, -(-width // tile) * tile), strip.dtype)
    padded[: strip.shape[0], :width] = strip
    for x0 in range(0, width, tile):
        yield padded[:, x0 : x0 + tile]


def predict_large(
    predictor: Predictor, path: Path, out_dir: Path, level: int = 0, alpha: float = 0.5
) -> tuple[np.ndarray, tuple[int, int]]:
    """Predict one large TIFF (module docstring) and write its outputs.

    Returns:
        The pixel count of every class (for ``summary.csv``) and the size (H, W) predicted.

    Raises:
        UnetkitError: see ``Predictor.iter_mask_bands``; more than 256 classes.
    """
    import tifffile

    info = predictor.info
    if len(info.classes) > 256:
        raise UnetkitError(f"{path}: a mask of more than 256 classes cannot be a palette TIFF")
    with LargeImage(path, level) as image:
        height, width = image.height, image.width
        step = image.preview_step()
        counts = np.zeros(max(len(info.classes), 1), np.int64)
        preview_rows: list[np.ndarray] = []

        def bands() -> Iterator[tuple[int, int, np.ndarray]]:
            for y0, y1, mask in predictor.iter_mask_bands(image):
                counts[:] += np.bincount(mask.ravel(), minlength=len(counts))[: len(counts)]
                first = (-y0) % step  # the preview keeps rows that are multiples of step
                preview_rows.append(mask[first::step, ::step].copy())  # not a view of the band
                yield y0, y1, mask

        target = out_dir / f"{path.stem}.tif"
        with atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
            writer.write(
                _tiles(bands(), height, width, TIFF_TILE),
                shape=(height, width),
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                compression="zlib",
                photometric="palette",
                colormap=_colormap(info.palette),
                metadata=None,
            )
        small = image.strided(step)
    mask = np.concatenate(preview_rows, axis=0)
    picture = overlay(
        small if small.shape[2] != 1 else small[:, :, 0],
        mask,
        info.palette,
        alpha,
        info.classes,
        contours=True,
        ignore_index=info.ignore_index,
    )
    save_png(out_dir / f"{path.stem}_preview.png", picture)
    return counts, (height, width)


def count_classes(path: Path, n_classes: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixel count of every class in a mask TIFF written by ``predict_large``, read band by
    band (for ``--skip-existing``), and its size (H, W)."""
    counts = np.zeros(max(n_classes, 1), np.int64)
    with LargeImage(path) as mask:
        for r0 in range(0, mask.height, 4 * TIFF_TILE):
            rows = mask.rows(r0, min(r0 + 4 * TIFF_TILE, mask.height))
            counts += np.bincount(rows.ravel(), minlength=len(counts))[: len(counts)]
        return counts, (mask.height, mask.width)


def large_outputs(out_dir: Path, stem: str) -> list[Path]:
    """The files ``predict_large`` writes for ``stem``."""
    return [out_dir / f"{stem}.tif", out_dir / f"{stem}_preview.png"]
