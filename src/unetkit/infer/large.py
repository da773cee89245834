"""Prediction of images too large for memory: read by region, written band by band.

For a TIFF that ``unetkit.data.largeimage.streamable`` accepts, ``predict`` writes instead of
the full-size PNGs:

* ``NAME.tif``: the class-index mask as a tiled (256 x 256), zlib-compressed BigTIFF of the
  input's size (at the pyramid level predicted), with the model's palette as its colour map
  and pyramid levels as SubIFDs (level ``k``: ``mask[::2**k, ::2**k]``, every ``2**k``-th pixel
  as the OME-Zarr levels pick them, added until the longer side is at most
  ``zarr_out.PYRAMID_TOP``), so viewers can show it zoomed out; neither the image nor the mask
  (nor a level) is ever whole in memory;
* ``NAME_preview.png``: the image with the predicted classes blended in, at most 2048 px on its
  longer side (every ``step``-th pixel of the image and of the mask).

With ``zarr=True`` (``predict --zarr``) the mask is ``NAME.ome.zarr`` instead of ``NAME.tif``:
an OME-NGFF 0.4 multiscale label image (``unetkit.infer.zarr_out``), assembled from the same
strips band by band; the preview and ``summary.csv`` are the same.

``NAME`` is ``unetkit.data.largeimage.output_stem`` of the input (``NAME.ome.tif`` -> ``NAME``).
With a pixel size (``pixel_size``: the input's metadata or ``predict --pixel-size``, of the
level predicted) the TIFF mask carries it as resolution tags (pixels per centimetre, every
level its own) and the OME-Zarr as each level's ``scale`` with the axes' ``unit``.

``summary.csv`` gets the usual row (class pixel counts summed over the strips).

**Strips and resuming.** The mask is predicted in strips of 256 rows (one row of TIFF tiles).
Each finished strip is compressed into its TIFF tiles and written, under a temporary name
renamed into place, into the part folder ``.NAME.unetkit-part/`` beside the outputs, with
``job.json`` saying what is being predicted (the input file, level, model file, prediction
settings). Once every strip is there, ``NAME.tif`` (or ``NAME.ome.zarr``) is assembled from
them and the folder is removed. A run that was interrupted (killed, an error, Ctrl-C) and is
started again with the same command finds the folder, checks ``job.json`` and predicts only the
strips missing: the network starts at the first row of tiles that touches the first missing
row, and every row comes out exactly as in one uninterrupted run
(``unetkit.infer.tiling.iter_bands``), so the final files are identical, byte for byte. The
strips do not depend on the mask's format: a run stopped with ``zarr`` resumes without it (and
the other way round). A part folder of another job (the input, the model or a setting changed)
is removed and the image predicted from the start.

**Sharded** (``unetkit.infer.shard``): each rank predicts its own contiguous run of strips
into the same part folder; rank 0 assembles them.

**Background** (``background="bright"`` or ``"dark"``, ``predict --skip-background``): the
preview grid (every ``step``-th pixel) is turned grey (mean of the channels) and thresholded by
Otsu's method; preview pixels brighter (``bright``: brightfield slides on white glass) or
darker (``dark``: fluorescence) than the threshold are background. A network tile whose input
window (tile plus context) holds no foreground preview pixel, within one preview pixel of the
window, is not run: it counts as class 0 with certainty. Pixels that no skipped tile covers
are predicted exactly as without skipping; pixels covered by skipped tiles only are class 0,
and where a skipped tile's blended border overlaps a computed one, the two are blended. A
grey level without contrast (a uniform preview) skips nothing.

All files are written under temporary names and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..data.largeimage import LargeImage, PixelSize, output_stem, tiff_resolution
from ..distributed import DistInfo
from ..errors import UnetkitError
from ..files import atomic_path, clean_stale_temps, write_bytes, write_text
from ..viz import overlay, save_png
from .predict import Predictor
from .shard import agree, gather, strip_share
from .zarr_out import SUFFIX as ZARR_SUFFIX
from .zarr_out import level_shapes, open_mask, write_label_zarr

log = logging.getLogger(__name__)

TIFF_TILE = 256
PART_TAG = ".unetkit-part"
BACKGROUNDS = ("bright", "dark")
_MAGIC = b"UNETKIT-STRIP-1\n"
_ZLIB_LEVEL = 6
_CAUGHT = (UnetkitError, OSError, ValueError)  # an input's problem: reported, not a crash


def _colormap(palette: list[list[int]]) -> np.ndarray:
    """A TIFF colour map (3, 256) uint16 from the model's palette (unused entries black)."""
    cmap = np.zeros((3, 256), np.uint16)
    for index, rgb in enumerate(palette[:256]):
        cmap[:, index] = [int(c) * 257 for c in rgb[:3]]
    return cmap


# -- background -------------------------------------------------------------------------------
class Background:
    """Which network tiles hold no foreground (module docstring), from the preview grid.

    Args:
        grid: ``image[::step, ::step]`` as (h, w, C).
        step: the grid's stride in image pixels.
        mode: ``bright`` (background brighter than the threshold) or ``dark``.

    Calling it with a window's rows and columns (slices or index arrays) says whether the
    window is background; ``tiles`` and ``skipped`` count the calls and the True answers.
    """

    def __init__(self, grid: np.ndarray, step: int, mode: str):
        if mode not in BACKGROUNDS:
            raise UnetkitError(f"background must be one of {', '.join(BACKGROUNDS)}; got {mode!r}")
        from skimage.filters import threshold_otsu

        grey = grid.astype(np.float32).mean(axis=2)
        self.step = max(1, int(step))
        self.foreground: np.ndarray | None = None  # None: no contrast, nothing is skipped
        if grey.size and float(grey.min()) < float(grey.max()):
            threshold = threshold_otsu(grey)
            self.foreground = grey <= threshold if mode == "bright" else grey > threshold
        self.tiles = self.skipped = 0

    @classmethod
    def from_mask(cls, foreground: np.ndarray | None, step: int) -> Background:
        """The background of a foreground grid computed elsewhere (rank 0's)."""
        made = cls(np.zeros((1, 1, 1), np.uint8), step, BACKGROUNDS[0])
        made.foreground = foreground
        return made

    def __call__(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> bool:
        self.tiles += 1
        if self.foreground is None:
            return False
        (y0, y1), (x0, x1) = _span(rows), _span(cols)
        s = self.step
        near = self.foreground[max(y0 // s - 1, 0) : y1 // s + 2, max(x0 // s - 1, 0) : x1 // s + 2]
        empty = not bool(near.any())
        self.skipped += empty
        return empty


def _span(index: slice | np.ndarray) -> tuple[int, int]:
    """First and last pixel (inclusive) of a slice with step 1 or an index array."""
    if isinstance(index, slice):
        return int(index.start), int(index.stop) - 1
    return int(index.min()), int(index.max())


# -- strips: the part folder ----------------------------------------------------------------------
def part_dir(out_dir: Path, stem: str) -> Path:
    """The folder that holds the finished strips of ``NAME.tif`` until it is assembled."""
    return out_dir / f".{stem}{PART_TAG}"


class _Strips:
    """The part folder of one image: ``job.json`` and one file per finished strip."""

    def __init__(self, folder: Path, job: dict):
        self.folder, self.job = folder, job

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.strip"

    def check(self) -> int:
        """Keep the folder if it belongs to this job, else remove it; the strips it holds."""
        if not self.folder.is_dir():
            return 0
        try:
            same = json.loads((self.folder / "job.json").read_text()) == self.job
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("%s: the strips there belong to another job; starting over", self.folder)
            shutil.rmtree(self.folder)
            return 0
        clean_stale_temps(self.folder)  # what a write killed mid-strip left
        return len(self.done())

    def done(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(p.stem) for p in self.folder.glob("[0-9]*.strip") if p.stem.isdigit()}

    def write(self, index: int, tiles: list[bytes]) -> None:
        if not (self.folder / "job.json").is_file():  # before the first strip, never after
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text(self.folder / "job.json", json.dumps(self.job, indent=1))
        lengths = np.array([len(tiles), *map(len, tiles)], "<u8").tobytes()
        write_bytes(self._path(index), _MAGIC + lengths + b"".join(tiles))

    def read(self, index: int, count: int) -> list[bytes]:
        """The ``count`` compressed tiles of a strip."""
        path = self._path(index)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnetkitError(f"{path}: strip {index} missing ({exc.strerror})") from None
        head = len(_MAGIC) + 8 * (count + 1)
        lengths = np.frombuffer(data[len(_MAGIC) : head], "<u8").astype(np.int64)
        if not data.startswith(_MAGIC) or len(lengths) != count + 1 or lengths[0] != count:
            raise UnetkitError(f"{path}: not a strip of {count} tiles")
        ends = head + np.cumsum(lengths[1:])
        if ends[-1] != len(data):
            raise UnetkitError(f"{path}: not a strip of {count} tiles")
        return [data[int(a) : int(b)] for a, b in zip([head, *ends[:-1]], ends)]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _job(
    predictor: Predictor, path: Path, level: int, size: tuple[int, int], background: str | None
) -> dict:
    """What a part folder's strips were predicted from (equal dicts: the same strips)."""

    def identity(file: Path) -> list:
        stat = file.stat()
        return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]

    model = Path(predictor.info.source or "")
    config = predictor.config.to_dict()
    for name in ("device", "precision", "min_area"):  # resolved below; the preview's only
        config.pop(name, None)
    network = predictor.network
    return {
        "format": 1,
        "input": identity(path),
        "level": level,
        "size": list(size),
        "strip": TIFF_TILE,
        "model": identity(model) if model.is_file() else str(model),
        "predict": config,
        "device": network.device.type,
        "precision": network.precision,
        "background": background,
    }


def _compress(rows: np.ndarray, tile: int) -> list[bytes]:
    """One strip of mask rows (h <= tile, W) as its zlib-compressed TIFF tiles, row-major;
    edge tiles padded with 0."""
    width = rows.shape[1]
    padded = np.zeros((tile, -(-width // tile) * tile), np.uint8)
    padded[: rows.shape[0], :width] = rows
    return [
        zlib.compress(np.ascontiguousarray(padded[:, x0 : x0 + tile]).tobytes(), _ZLIB_LEVEL)
        for x0 in range(0, width, tile)
    ]


def _decompress(tiles: list[bytes], height: int, width: int, tile: int) -> np.ndarray:
    """The (height, width) mask rows of a strip from its compressed tiles."""
    parts = [np.frombuffer(zlib.decompress(t), np.uint8).reshape(tile, tile) for t in tiles]
    return np.concatenate(parts, axis=1)[:height, :width]


def _strips_of(
    bands: Iterable[tuple[int, int, np.ndarray]], r0: int, r1: int, tile: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Bands of rows ``[r0, r1)`` (``r0`` a multiple of ``tile``) regrouped into strips of
    ``tile`` rows: ``(strip index, rows)``. At most one strip (plus one band) is held."""
    pending: list[np.ndarray] = []
    held, index = 0, r0 // tile
    for _, _, band in bands:
        pending.append(band)
        held += band.shape[0]
        while pending and held >= min(tile, r1 - index * tile):
            need = min(tile, r1 - index * tile)
            rows = np.concatenate(pending, axis=0)
            yield index, rows[:need]
            rest = rows[need:]
            pending, held, index = ([rest] if len(rest) else []), len(rest), index + 1


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted strip indices as runs ``[a, b)`` of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


# -- the whole image ------------------------------------------------------------------------------
def predict_large(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    level: int = 0,
    alpha: float = 0.5,
    *,
    shard: DistInfo | None = None,
    background: str | None = None,
    zarr: bool = False,
    pixel_size: PixelSize | None = None,
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Predict one large TIFF (module docstring) and write its outputs.

    Args:
        predictor: the model.
        path: the TIFF.
        out_dir: where ``NAME.tif`` (or ``NAME.ome.zarr``), ``NAME_preview.png`` (and the
            part folder) go.
        level: the pyramid level.
        alpha: colour weight of the preview.
        shard: this process's place among the ranks of ``torchrun`` (every rank calls this
            for the same image); None: one process.
        background: ``bright`` / ``dark``: skip the tiles that hold only background.
        zarr: write the mask as ``NAME.ome.zarr`` (``unetkit.infer.zarr_out``) instead of
            ``NAME.tif``.
        pixel_size: the size of a pixel at the level predicted, written into the mask.

    Returns:
        The pixel count of every class (for ``summary.csv``) and the size (H, W) predicted;
        None on ranks other than 0.

    Raises:
        UnetkitError: see ``Predictor.iter_mask_bands``; more than 256 classes; an error on
            another rank (its message).
    """
    shard = shard or DistInfo()
    info = predictor.info
    with _Slide(predictor, path, out_dir, level, background, shard) as slide:
        slide.step(slide.open)
        slide.share_background()
        slide.step(slide.predict_strips)
        if not shard.is_main:
            return None
        counts = slide.assemble(zarr, pixel_size)
        picture = overlay(
            slide.grid if slide.grid.shape[2] != 1 else slide.grid[:, :, 0],
            slide.preview_mask(),
            info.palette,
            alpha,
            info.classes,
            contours=True,
            ignore_index=info.ignore_index,
        )
        save_png(out_dir / f"{output_stem(path)}_preview.png", picture)
        slide.strips.remove()
        return counts, slide.size


class _Slide:
    """The state of ``predict_large`` for one image; its steps are run by every rank."""

    def __init__(
        self,
        predictor: Predictor,
        path: Path,
        out_dir: Path,
        level: int,
        background: str | None,
        shard: DistInfo,
    ):
        self.predictor, self.path, self.out_dir, self.level = predictor, path, out_dir, level
        self.background_mode, self.shard = background, shard
        self.image: LargeImage | None = None
        self.grid = np.zeros((0, 0, 1), np.uint8)
        self.background: Background | None = None
        self.size = (0, 0)
        self.preview_step = 1
        self.strips = _Strips(part_dir(out_dir, output_stem(path)), {})
        self.preview_rows: list[np.ndarray] = []

    def __enter__(self) -> _Slide:
        return self

    def __exit__(self, *exc) -> None:
        if self.image is not None:
            self.image.close()

    def step(self, action) -> None:
        """Run ``action`` on this rank; the ranks then agree on whether all succeeded (one
        process: its exception as it is)."""
        if not self.shard.enabled:
            action()
            return
        error = None
        try:
            action()
        except _CAUGHT as exc:
            error = str(exc) if str(self.path) in str(exc) else f"{self.path}: {exc}"
        error = agree(error, self.shard)
        if error is not None:
            raise UnetkitError(error)

    def open(self) -> None:
        """Open the image; rank 0 also reads the preview grid and checks the part folder."""
        if len(self.predictor.info.classes) > 256:
            raise UnetkitError(
                f"{self.path}: a mask of more than 256 classes cannot be a palette TIFF"
            )
        self.image = image = LargeImage(self.path, self.level)
        self.size = (image.height, image.width)
        self.preview_step = image.preview_step()
        job = _job(self.predictor, self.path, self.level, self.size, self.background_mode)
        self.strips = _Strips(part_dir(self.out_dir, output_stem(self.path)), job)
        if self.shard.is_main:
            stats = self.predictor.stats_step(self.size)  # read in the same pass
            steps = [self.preview_step] if stats is None else [self.preview_step, stats]
            image.strided_many(steps)
            self.grid = image.strided(self.preview_step)  # the preview (and the background)
            if self.background_mode is not None:
                self.background = Background(self.grid, self.preview_step, self.background_mode)
            done = self.strips.check()
            if done:
                total = math.ceil(self.size[0] / TIFF_TILE)
                log.info("%s: resuming: %d of %d strips were written", self.path, done, total)

    def share_background(self) -> None:
        """Rank 0's background mask to every rank (computed once, from its preview grid)."""
        if self.background_mode is None or not self.shard.enabled:
            return
        foreground = self.background.foreground if self.background is not None else None
        foreground = gather(foreground, self.shard)[0]
        if not self.shard.is_main:
            self.background = Background.from_mask(foreground, self.preview_step)

    def predict_strips(self) -> None:
        """Predict this rank's strips that the part folder does not hold yet."""
        assert self.image is not None
        height = self.size[0]
        done = self.strips.done()
        todo = [s for s in strip_share(math.ceil(height / TIFF_TILE), self.shard) if s not in done]
        for a, b in _runs(todo):
            r0, r1 = a * TIFF_TILE, min(b * TIFF_TILE, height)
            bands = self.predictor.iter_mask_bands(self.image, (r0, r1), self.background)
            for index, rows in _strips_of(bands, r0, r1, TIFF_TILE):
                self.strips.write(index, _compress(rows, TIFF_TILE))
        if self.background is not None and self.background.tiles:
            log.info(
                "%s: %d of %d network tiles skipped as background",
                self.path, self.background.skipped, self.background.tiles,
            )  # fmt: skip

    def assemble(self, zarr: bool = False, pixel_size: PixelSize | None = None) -> np.ndarray:
        """Rank 0: ``NAME.tif`` (``zarr``: ``NAME.ome.zarr``) from the strips; the class counts
        (and the preview's rows)."""
        import tifffile

        info = self.predictor.info
        height, width = self.size
        count = -(-width // TIFF_TILE)
        counts = np.zeros(max(len(info.classes), 1), np.int64)
        step = self.preview_step
        self.preview_rows = []

        def strips() -> Iterator[tuple[list[bytes], np.ndarray]]:
            """Every strip's compressed tiles and its rows, in order (counted as they go)."""
            for index in range(math.ceil(height / TIFF_TILE)):
                data = self.strips.read(index, count)
                y0 = index * TIFF_TILE
                rows = _decompress(data, min(TIFF_TILE, height - y0), width, TIFF_TILE)
                counts[:] += np.bincount(rows.ravel(), minlength=len(counts))[: len(counts)]
                first = (-y0) % step  # the preview keeps rows that are multiples of step
                self.preview_rows.append(rows[first::step, ::step].copy())
                yield data, rows

        stem = output_stem(self.path)
        if zarr:
            write_label_zarr(
                self.out_dir / f"{stem}{ZARR_SUFFIX}",
                (rows for _, rows in strips()),
                self.size,
                info.palette,
                info.classes,
                name=stem,
                pixel_size=pixel_size,
            )
            return counts
        shapes = level_shapes(self.size)
        target = self.out_dir / f"{stem}.tif"
        with atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
            for k, shape in enumerate(shapes):
                tiles = (
                    (tile for data, _ in strips() for tile in data)
                    if k == 0
                    else self._level_tiles(2**k, shape)
                )
                size = pixel_size.scaled(2**k) if pixel_size is not None else None
                writer.write(
                    tiles,
                    shape=shape,
                    dtype=np.uint8,
                    tile=(TIFF_TILE, TIFF_TILE),
                    compression="zlib",
                    photometric="palette",
                    colormap=_colormap(info.palette),
                    metadata=None,
                    subifds=len(shapes) - 1 if k == 0 else None,
                    subfiletype=1 if k else 0,
                    **(tiff_resolution(size) if size is not None else {}),
                )
        return counts

    def _level_tiles(self, factor: int, shape: tuple[int, int]) -> Iterator[bytes]:
        """The compressed TIFF tiles of the pyramid level ``mask[::factor, ::factor]``, row of
        tiles by row of tiles, from the strips read again one at a time."""
        height, width = self.size
        count = -(-width // TIFF_TILE)
        pending: list[np.ndarray] = []
        held = written = 0
        for index in range(math.ceil(height / TIFF_TILE)):
            y0 = index * TIFF_TILE
            rows = _decompress(
                self.strips.read(index, count), min(TIFF_TILE, height - y0), width, TIFF_TILE
            )
            picked = rows[(-y0) % factor :: factor, ::factor].copy()  # not a view of the strip
            if len(picked):
                pending.append(picked)
                held += len(picked)
            while held >= TIFF_TILE:
                band = np.concatenate(pending)
                yield from _compress(band[:TIFF_TILE], TIFF_TILE)
                rest = band[TIFF_TILE:]
                pending, held, written = (
                    ([rest] if len(rest) else []),
                    len(rest),
                    written + TIFF_TILE,
                )
        if held:
            yield from _compress(np.concatenate(pending), TIFF_TILE)
        if written + held != shape[0]:
            raise ValueError(f"pyramid level {shape}: the strips gave {written + held} rows")

    def preview_mask(self) -> np.ndarray:
        return np.concatenate(self.preview_rows, axis=0)


def count_classes(path: Path, n_classes: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixel count of every class in a mask TIFF (or OME-Zarr) written by ``predict_large``,
    read band by band (for ``--skip-existing``), and its size (H, W)."""
    counts = np.zeros(max(n_classes, 1), np.int64)
    with contextlib.ExitStack() as stack:
        read: Callable[[int, int], np.ndarray]
        if path.name.endswith(ZARR_SUFFIX):
            array = open_mask(path)
            height, width = (int(n) for n in array.shape)
            read = lambda r0, r1: np.asarray(array[r0:r1])  # noqa: E731
        else:
            mask = stack.enter_context(LargeImage(path))
            height, width, read = mask.height, mask.width, mask.rows
        for r0 in range(0, height, 4 * TIFF_TILE):
            rows = read(r0, min(r0 + 4 * TIFF_TILE, height))
            counts += np.bincount(rows.ravel(), minlength=len(counts))[: len(counts)]
    return counts, (height, width)


def large_outputs(out_dir: Path, stem: str, zarr: bool = False) -> list[Path]:
    """The files ``predict_large`` writes for ``stem`` (the mask first)."""
    mask = out_dir / (f"{stem}{ZARR_SUFFIX}" if zarr else f"{stem}.tif")
    return [mask, out_dir / f"{stem}_preview.png"]


def finished(path: Path) -> bool:
    """Whether an output of ``predict_large`` is in place (``NAME.ome.zarr``: a folder, only
    ever renamed into place whole)."""
    if path.name.endswith(ZARR_SUFFIX):
        return path.is_dir()
    return path.is_file()


def remove_parts(out_dir: Path, stem: str) -> None:
    """Remove a part folder left beside finished outputs (a run stopped after assembling)."""
    folder = part_dir(out_dir, stem)
    if folder.is_dir() and not os.path.islink(folder):
        shutil.rmtree(folder, ignore_errors=True)
