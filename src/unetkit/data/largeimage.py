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

``pixel_size_of(path, level)`` reads a TIFF's physical pixel size (``PixelSize``): OME-XML
``PhysicalSizeX`` / ``PhysicalSizeY`` (their ``PhysicalSizeXUnit``, default um), else an ImageJ
description's ``unit`` with the resolution tags (pixels per that unit), else the TIFF
resolution tags with ``ResolutionUnit`` inch, centimetre, millimetre or micrometre. Resolution
unit "none", no tags, and 72 or 96 pixels per inch (the default of image editors, a 353 or 265
um pixel) say nothing. At pyramid level ``k`` the size is level 0's times the ratio of the
levels' widths. ``output_stem(path)`` is the name every output of an input is named from:
the file name without its suffix and without ``.ome`` (``NAME.ome.tif`` -> ``NAME``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import UnetkitError

LARGE_PIXELS = 1 << 26  # 67 M pixels: above this, a TIFF is read by region
MAX_SEGMENT_BYTES = 64 << 20  # a tile or strip larger than this is not read by region
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs")
_AXES = ("YX", "YXS", "CYX", "SYX", "QYX")  # QYX: tifffile's name for planes of unknown meaning

# length units: micrometres per unit; their OME-NGFF (UDUNITS-2) names
MICROMETRES = {"nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
NGFF_UNITS = {
    "nm": "nanometer", "um": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
}  # fmt: skip
_ALIASES = {
    "µm": "um", "μm": "um", "\\u00b5m": "um", "micron": "um", "microns": "um",
    "micrometer": "um", "micrometre": "um", "nanometer": "nm", "nanometre": "nm",
    "millimeter": "mm", "millimetre": "mm", "centimeter": "cm", "centimetre": "cm",
    "meter": "m", "metre": "m", "å": "nm", "angstrom": "nm",
}  # fmt: skip
_ANGSTROM = ("å", "angstrom")
_EDITOR_DPI = (72.0, 96.0)  # resolution tags of image editors, not of a microscope


def length_unit(unit: str) -> str | None:
    """``unit`` as one of :data:`MICROMETRES`' keys (``micron``, ``µm`` -> ``um``), or None
    for a unit that is not a length (``pixel``, ``inch`` is converted by the caller)."""
    key = unit.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in MICROMETRES else None


@dataclass(frozen=True)
class PixelSize:
    """The physical size of a pixel: ``x`` (width) and ``y`` (height) in ``unit`` (a key of
    :data:`MICROMETRES`)."""

    x: float
    y: float
    unit: str = "um"

    def __post_init__(self) -> None:
        if self.unit not in MICROMETRES:
            raise ValueError(f"unit must be one of {', '.join(MICROMETRES)}; got {self.unit!r}")
        if not (self.x > 0 and self.y > 0 and math.isfinite(self.x) and math.isfinite(self.y)):
            raise ValueError(f"a pixel size must be > 0; got {self.x} x {self.y}")

    @property
    def ngff_unit(self) -> str:
        """The unit's OME-NGFF name (``micrometer``)."""
        return NGFF_UNITS[self.unit]

    def micrometres(self) -> tuple[float, float]:
        """(x, y) in micrometres."""
        factor = MICROMETRES[self.unit]
        return self.x * factor, self.y * factor

    def scaled(self, factor: float) -> PixelSize:
        """The size of a pixel ``factor`` times as large (a down-sampled level)."""
        return PixelSize(self.x * factor, self.y * factor, self.unit)


def output_stem(path: str | os.PathLike) -> str:
    """The name an input's outputs are named from: ``NAME`` for ``NAME.png``, ``NAME.tif``
    and ``NAME.ome.tif`` alike (module docstring)."""
    stem = Path(path).stem
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") and len(stem) > 4 else stem


def pixel_size_of(path: str | os.PathLike, level: int = 0) -> PixelSize | None:
    """The physical pixel size a TIFF's metadata states (module docstring), at pyramid
    ``level``; None for other files, or where the metadata states none."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            found = _ome_size(tif.ome_metadata) if tif.is_ome else None
            if found is None and tif.is_imagej:
                found = _imagej_size(tif.imagej_metadata or {}, page)
            if found is None:
                found = _tag_size(page)
            if found is None or not level:
                return found
            levels = tif.series[0].levels
            if not 0 <= level < len(levels):
                return None
            width = {lv: int(levels[lv].shape[levels[lv].axes.index("X")]) for lv in (0, level)}
            return found.scaled(width[0] / width[level])
    except Exception:  # noqa: BLE001 - metadata that cannot be read states no size
        return None


def _ome_size(xml: str | None) -> PixelSize | None:
    """``PhysicalSizeX`` / ``Y`` of the first image of OME-XML."""
    if not xml:
        return None
    from xml.etree import ElementTree

    pixels = ElementTree.fromstring(xml).find(".//{*}Image/{*}Pixels")
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None
    x = float(pixels.get("PhysicalSizeX", "nan"))
    y = float(pixels.get("PhysicalSizeY", x))
    xunit, yunit = (pixels.get(f"PhysicalSize{a}Unit", "µm") for a in "XY")
    return _size(x, y, xunit, yunit)


def _size(x: float, y: float, xunit: str, yunit: str) -> PixelSize | None:
    """A size in any length units, as one unit (x's); None for units that are not lengths."""
    if xunit.strip().lower() in _ANGSTROM:
        x, xunit = x / 10, "nm"
    if yunit.strip().lower() in _ANGSTROM:
        y, yunit = y / 10, "nm"
    units = length_unit(xunit), length_unit(yunit)
    if units[0] is None or units[1] is None:
        return None
    y *= MICROMETRES[units[1]] / MICROMETRES[units[0]]
    try:
        return PixelSize(x, y, units[0])
    except ValueError:
        return None


def _resolution(page) -> tuple[float, float] | None:
    """Pixels per resolution unit (x, y) from the tags, or None without them."""
    if page.tags.get(282) is None:  # XResolution
        return None
    x, y = page.resolution
    return (x, y) if x > 0 and y > 0 else None


def _imagej_size(metadata: dict, page) -> PixelSize | None:
    """ImageJ: ``unit`` in the description, pixels per unit in the resolution tags."""
    unit = metadata.get("unit")
    resolution = _resolution(page)
    if not isinstance(unit, str) or resolution is None:
        return None
    return _size(1 / resolution[0], 1 / resolution[1], unit, unit)


def _tag_size(page) -> PixelSize | None:
    """The resolution tags with a length ``ResolutionUnit``, in micrometres."""
    resolution = _resolution(page)
    per_unit = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}.get(int(page.resolutionunit))
    if resolution is None or per_unit is None:
        return None
    if int(page.resolutionunit) == 2 and resolution[0] in _EDITOR_DPI:
        return None
    try:
        return PixelSize(per_unit / resolution[0], per_unit / resolution[1], "um")
    except ValueError:
        return None


def tiff_resolution(size: PixelSize) -> dict:
    """The TIFF tags (tifffile ``write`` arguments) of a pixel size: pixels per centimetre."""
    x, y = size.micrometres()
    return {"resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER"}


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
        of decoding them again: one decode pass over the file, not one per window row."""
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


def level_in_memory(path: str | os.PathLike, level: int, max_pixels: int) -> np.ndarray | None:
    """Pyramid level ``level`` of a TIFF, whole, as (H, W, C), when it has at most
    ``max_pixels`` pixels (None when it has more).

    Raises:
        UnetkitError: as ``LargeImage`` (unreadable, no such level, unsupported axes).
    """
    with LargeImage(path, level) as image:
        if image.height * image.width > max_pixels:
            return None
        return np.ascontiguousarray(image.rows(0, image.height))
