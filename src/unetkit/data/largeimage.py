"""Images too large for memory: tiled (Big)TIFF and OME-TIFF pyramids, read by region.

``LargeImage`` opens a TIFF with tifffile and reads it through zarr (``TiffFile.aszarr``), so
only the tiles under a requested region are decoded. It offers what tiled prediction needs:

* ``read_region(rows, cols)``: the pixels at row / column indices (slices, or index arrays such
  as the mirrored indices of a window beyond the border), as an (h, w, C) array. The rows last
  read, across the whole width, are kept: tiled prediction asks for every column window of one
  row of tiles in turn; and so are the decoded rows of TIFF tiles under them, which the next
  row of network tiles (overlapping by its context) reuses, so each TIFF tile is decoded once;
* ``strided(step)``: ``image[::step, ::step]``, assembled band by band (whole-image statistics
  and previews without the whole image in memory); ``strided_many(steps)`` reads several in
  one pass.

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
        chunk_rows = int(self._array.chunks[0 if self.axes in ("YX", "YXS") else 1])
        self._granule = chunk_rows * max(1, -(-64 // chunk_rows))  # >= 64 rows, whole chunks
        self._chunks: dict[int, np.ndarray] = {}  # granule index -> its decoded rows
        self._grids: dict[int, np.ndarray] = {}  # step -> strided grid (``strided_many``)

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

    def _rows_from_chunks(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` (as ``rows``), decoding each row of the file's tiles (or strips)
        once while reads move down the image: the rows of tiles under the last read are kept,
        and consecutive network windows, which overlap by their context, reuse them instead
        of decoding them again (measured: one decode pass instead of two at 640 px windows
        over 512 px TIFF tiles)."""
        g = self._granule
        first, last = r0 // g, (r1 - 1) // g
        for i in [i for i in self._chunks if not first <= i <= last]:
            del self._chunks[i]
        parts = []
        for i in range(first, last + 1):
            if i not in self._chunks:
                self._chunks[i] = self.rows(i * g, min((i + 1) * g, self.height))
            parts.append(self._chunks[i])
        band = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return band[r0 - first * g : r1 - first * g]

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
            self._cache = None  # (freed before the next rows are decoded)
            cache = self._cache = (r0, r1, self._rows_from_chunks(r0, r1))
        c0, _, band = cache
        if isinstance(local, slice):
            band = band[r0 - c0 + local.start : r0 - c0 + local.stop]
        else:
            band = band[local + (r0 - c0)]
        return band[:, cols]

    def strided(self, step: int, band_rows: int = 1024) -> np.ndarray:
        """``image[::step, ::step]`` as (ceil(H / step), ceil(W / step), C), read band by band
        (or the grid ``strided_many`` read for this step already)."""
        step = max(1, int(step))
        if step in self._grids:
            return self._grids[step]
        return self._strided([step], band_rows)[0]

    def strided_many(self, steps: list[int], band_rows: int = 1024) -> list[np.ndarray]:
        """``strided`` for several steps in one pass over the file (a slide's preview and its
        normalisation statistics: one decode instead of two); the grids are kept, and
        ``strided`` of these steps returns them."""
        steps = sorted({max(1, int(s)) for s in steps})
        if math.lcm(*steps) > 4 * band_rows:  # bands on a common grid would be too tall
            grids = [self._strided([s], band_rows)[0] for s in steps]
        else:
            grids = self._strided(steps, band_rows)
        self._grids.update(zip(steps, grids))
        return grids

    def _strided(self, steps: list[int], band_rows: int) -> list[np.ndarray]:
        period = math.lcm(*steps)
        chunk = max(period, band_rows // period * period)  # bands start on multiples of steps
        parts: list[list[np.ndarray]] = [[] for _ in steps]
        for r0 in range(0, self.height, chunk):
            rows = self.rows(r0, min(r0 + chunk, self.height))
            for part, step in zip(parts, steps):
                # copies, not views: a view would keep every full-width band of rows alive
                part.append(rows[::step, ::step].copy())
            del rows  # let the band go before the next is decoded
        return [np.concatenate(part, axis=0) for part in parts]

    def preview_step(self, longest: int = 2048) -> int:
        """The stride that brings the longer side to at most ``longest`` pixels."""
        return max(1, math.ceil(max(self.height, self.width) / longest))

    # -- life cycle --------------------------------------------------------------------------------
    def close(self) -> None:
        self._cache = None
        self._chunks.clear()
        self._grids.clear()
        self._tif.close()

    def __enter__(self) -> LargeImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
