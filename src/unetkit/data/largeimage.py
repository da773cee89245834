"""Images too large for memory: tiled (Big)TIFF and OME-TIFF pyramids, read by region.

``LargeImage`` opens a TIFF with tifffile and reads it through zarr (``TiffFile.aszarr``), so
only the tiles under a requested region are decoded. It offers what tiled prediction needs:

* ``read_region(rows, cols)``: the pixels at row / column indices (slices, or index arrays such
  as the mirrored indices of a window beyond the border), as an (h, w, C) array. The rows last
  read, across the whole width, are kept: tiled prediction asks for every column window of one
  row of tiles in turn, so each TIFF tile is decoded once per row of network tiles;
* ``strided(step)``: ``image[::step, ::step]``, assembled band by band (whole-image statistics
  and previews without the whole image in memory).

``streamable(path)`` says whether a file should take this path rather than be read whole:
a TIFF over :data:`LARGE_PIXELS` pixels (or any TIFF, when a pyramid ``level`` is asked for)
whose tiles or strips are each small. A stripped TIFF with huge strips cannot be read by
region and stays on the normal path (which refuses decompression bombs from the header).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import UnetkitError

LARGE_PIXELS = 1 << 26  # 67 M pixels: above this, a TIFF is read by region
MAX_SEGMENT_BYTES = 64 << 20  # a tile or strip larger than this is not read by region
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs")
_AXES = ("YX", "YXS", "CYX", "SYX", "QYX")  # QYX: tifffile's name for planes of unknown meaning


def _segment_bytes(page) -> int:
    """Decoded bytes of one tile (or strip) of a TIFF page."""
    if page.is_tiled:
        rows, cols = page.tilelength, page.tilewidth
    else:
        rows, cols = page.rowsperstrip or page.imagelength, page.imagewidth
    samples = page.samplesperpixel if page.planarconfig == 1 else 1
    return int(rows) * int(cols) * int(samples) * int(np.dtype(page.dtype).itemsize)


def streamable(
    path: str | os.PathLike, level: int | None = None, large_pixels: int = LARGE_PIXELS
) -> bool:
    """Whether ``path`` should be predicted by region (module docstring); False for anything
    that is not a readable TIFF of a supported layout (the normal reader reports those)."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.levels[0].keyframe
            if series.levels[0].axes not in _AXES or page.dtype is None:
                return False
            if _segment_bytes(page) > MAX_SEGMENT_BYTES:
                return False
            size = int(page.imagelength) * int(page.imagewidth)
            return level is not None or size > large_pixels
    except Exception:  # noqa: BLE001 - tifffile raises many kinds; the normal path explains
        return False


class LargeImage:
    """A TIFF read by region (module docstring). Use as a context manager, or ``close()``.

    Args:
        path: the TIFF file.
        level: the pyramid level (0 = full resolution; OME-TIFF / SVS sub-resolutions).

    Raises:
        UnetkitError: unreadable file, a level it does not have, an unsupported axis layout.
    """

    def __init__(self, path: str | os.PathLike, level: int = 0):
        import tifffile
        import zarr

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # noqa: BLE001
            raise UnetkitError(f"{self.path}: not a readable TIFF ({exc})") from None
        try:
            series = self._tif.series[0]
            levels = series.levels
            if not 0 <= level < len(levels):
                raise UnetkitError(
                    f"{self.path}: no pyramid level {level} (it has levels 0..{len(levels) - 1})"
                )
            chosen = levels[level]
            self.axes = chosen.axes
            if self.axes not in _AXES:
                raise UnetkitError(
                    f"{self.path}: axes {self.axes} are not supported (YX, YXS or CYX)"
                )
            self.level_shapes = [tuple(int(n) for n in lv.shape) for lv in levels]
            store = self._tif.aszarr(series=0, level=level)
            self._array = cast("zarr.Array", zarr.open(store, mode="r"))  # one level: an array
        except UnetkitError:
            self._tif.close()
            raise
        except Exception as exc:  # noqa: BLE001
            self._tif.close()
            raise UnetkitError(f"{self.path}: cannot read by region ({exc})") from None
        shape = tuple(int(n) for n in self._array.shape)
        if self.axes == "YX":
            self.shape = (shape[0], shape[1], 1)
        elif self.axes == "YXS":
            self.shape = shape  # type: ignore[assignment]
        else:  # CYX / SYX / QYX: channels first on disk
            self.shape = (shape[1], shape[2], shape[0])
        self.dtype = np.dtype(self._array.dtype)
        self.level = level
        self._cache: tuple[int, int, np.ndarray] | None = None

    # -- size ------------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[2]

    # -- reading -----------------------------------------------------------------------------------
    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` across the whole width, (r1 - r0, W, C)."""
        try:
            if self.axes == "YX":
                return np.asarray(self._array[r0:r1])[:, :, None]
            if self.axes == "YXS":
                return np.asarray(self._array[r0:r1])
            return np.moveaxis(np.asarray(self._array[:, r0:r1]), 0, -1)
        except Exception as exc:  # noqa: BLE001 - a corrupt tile deep in the file
            raise UnetkitError(f"{self.path}: cannot read rows {r0}..{r1} ({exc})") from None

    def read_region(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
        """Pixels at the given rows and columns (slices with step 1, or index arrays)."""
        if isinstance(rows, slice):
            r0, r1 = rows.start or 0, self.height if rows.stop is None else rows.stop
            local: slice | np.ndarray = slice(0, r1 - r0)
        else:
            r0, r1 = int(rows.min()), int(rows.max()) + 1
            local = rows - r0
        cache = self._cache
        if cache is None or not (cache[0] <= r0 and r1 <= cache[1]):
            cache = self._cache = (r0, r1, self.rows(r0, r1))
        c0, _, band = cache
        if isinstance(local, slice):
            band = band[r0 - c0 + local.start : r0 - c0 + local.stop]
        else:
            band = band[local + (r0 - c0)]
        return band[:, cols]

    def strided(self, step: int, band_rows: int = 1024) -> np.ndarray:
        """``image[::step, ::step]`` as (ceil(H / step), ceil(W / step), C), read band by band."""
        step = max(1, int(step))
        chunk = max(step, band_rows // step * step)  # bands start on multiples of step
        # copies, not views: a view would keep every full-width band of rows alive
        parts = [self.rows(r0, min(r0 + chunk, self.height))[::step, ::step].copy()
                 for r0 in range(0, self.height, chunk)]  # fmt: skip
        return np.concatenate(parts, axis=0)

    def preview_step(self, longest: int = 2048) -> int:
        """The stride that brings the longer side to at most ``longest`` pixels."""
        return max(1, math.ceil(max(self.height, self.width) / longest))

    # -- life cycle --------------------------------------------------------------------------------
    def close(self) -> None:
        self._cache = None
        self._tif.close()

    def __enter__(self) -> LargeImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
