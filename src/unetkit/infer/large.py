"""Prediction of images too large for memory: read by region, written band by band.

For a TIFF that ``unetkit.data.largeimage.streamable`` accepts, ``predict`` writes instead of
the full-size PNGs:

* ``NAME.tif``: the class-index mask as a tiled, zlib-compressed palette BigTIFF of the input's
  size (at the pyramid level predicted) with its pyramid levels as SubIFDs
  (``unetkit.infer.tiff_out``); neither the image nor the mask (nor a level) is ever whole in
  memory;
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

**Strips and resuming** (``unetkit.infer.strips``): the mask is predicted in strips of 256
rows, each written into the part folder ``.NAME.unetkit-part/`` as it is finished; the mask is
assembled from them once every strip is there. A run that was interrupted and is started again
with the same command predicts only the strips missing, and the final files are identical, byte
for byte, to those of one uninterrupted run.

**Sharded** (``unetkit.infer.shard``): each rank predicts its own contiguous run of strips
into the same part folder; rank 0 assembles them.

**Background** (``background="bright"`` or ``"dark"``, ``predict --skip-background``): the
network tiles whose window holds only background, by Otsu's threshold on the preview grid, are
not run (``unetkit.infer.background``).

All files are written under temporary names and renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..data.largeimage import LargeImage, PixelSize, output_stem
from ..distributed import DistInfo
from ..errors import UnetkitError
from ..viz import overlay, save_png
from .background import Background
from .predict import Predictor
from .shard import agree, gather, strip_share
from .strips import Strips, part_dir, runs, strip_job, strips_of
from .tiff_out import TIFF_TILE, compress, decompress, write_mask_tiff
from .zarr_out import SUFFIX as ZARR_SUFFIX
from .zarr_out import open_mask, write_label_zarr

log = logging.getLogger(__name__)

_CAUGHT = (UnetkitError, OSError, ValueError)  # an input's problem: reported, not a crash


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
        self.strips = Strips(part_dir(out_dir, output_stem(path)), {})
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
        job = strip_job(self.predictor, self.path, self.level, self.size, self.background_mode)
        self.strips = Strips(part_dir(self.out_dir, output_stem(self.path)), job)
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
        for a, b in runs(todo):
            r0, r1 = a * TIFF_TILE, min(b * TIFF_TILE, height)
            bands = self.predictor.iter_mask_bands(self.image, (r0, r1), self.background)
            for index, rows in strips_of(bands, r0, r1, TIFF_TILE):
                self.strips.write(index, compress(rows, TIFF_TILE))
        if self.background is not None and self.background.tiles:
            log.info(
                "%s: %d of %d network tiles skipped as background",
                self.path, self.background.skipped, self.background.tiles,
            )  # fmt: skip

    def assemble(self, zarr: bool = False, pixel_size: PixelSize | None = None) -> np.ndarray:
        """Rank 0: ``NAME.tif`` (``zarr``: ``NAME.ome.zarr``) from the strips; the class counts
        (and the preview's rows)."""
        info = self.predictor.info
        counts = np.zeros(max(len(info.classes), 1), np.int64)
        step = self.preview_step
        self.preview_rows = []

        def strips() -> Iterator[tuple[list[bytes], np.ndarray]]:
            """Every strip's compressed tiles and its rows, in order (counted as they go)."""
            for index, (data, rows) in enumerate(self._read_strips()):
                counts[:] += np.bincount(rows.ravel(), minlength=len(counts))[: len(counts)]
                first = (-index * TIFF_TILE) % step  # the preview keeps rows y % step == 0
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
        write_mask_tiff(
            self.out_dir / f"{stem}.tif",
            (tile for data, _ in strips() for tile in data),
            lambda: (rows for _, rows in self._read_strips()),
            self.size,
            info.palette,
            pixel_size,
        )
        return counts

    def _read_strips(self) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """Every strip's compressed tiles and its rows, read from the part folder one at a
        time, from the top."""
        height, width = self.size
        count = -(-width // TIFF_TILE)
        for index in range(math.ceil(height / TIFF_TILE)):
            data = self.strips.read(index, count)
            y0 = index * TIFF_TILE
            yield data, decompress(data, min(TIFF_TILE, height - y0), width, TIFF_TILE)

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
