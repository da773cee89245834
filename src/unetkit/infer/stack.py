"""Prediction of TIFF stacks (time-lapses, z-stacks, page sequences), plane by plane.

For a TIFF that ``unetkit.data.stack.stack_layout`` reads as a stack, ``predict`` predicts every
plane as it predicts a single image (``Predictor.predict_mask`` / ``predict_objects``, the
same tiling and per-image normalisation: each plane's mask is bitwise the mask of that plane
saved as an image of its own), reading one plane at a time, and writes instead of the
per-image PNGs:

* ``NAME.tif``: the class mask, one uint8 page per plane in the input's plane order, with the
  input's plane axes recorded. T, Z and TZ stacks: an ImageJ hyperstack (``frames`` /
  ``slices``, the model's palette as its LUT; uncompressed, as ImageJ writes them) that Fiji
  opens as a hyperstack and tifffile / napari read with axes ``TZYX``; other orders (ZT from an
  OME-TIFF), generic page sequences (I, Q) and masks over 3.5 GiB: a zlib-compressed OME-TIFF
  (BigTIFF when needed) with the same axes (``I`` is written as OME's generic ``Q``);
* ``NAME_preview.png``: a montage of up to 16 planes spread evenly over the stack (first and
  last included), each the image with its predicted classes blended in and outlined, labelled
  with its plane, at most 2048 px on its longer side;
* with objects (instance models, ``--objects``): ``NAME_instances.tif``, the object ids of each
  plane (numbered from 1 in every plane; int32 OME-TIFF, zlib, axes as ``NAME.tif``), and
  ``NAME_objects.csv``, one row per object of every plane: ``plane`` (the page index in
  ``NAME.tif`` and ``NAME_instances.tif``, from 0), then one column per plane axis for T / Z
  stacks (``t``, ``z``: the index along it), then the columns of a single image's table.

``summary.csv`` gets one row per plane, its ``image`` column ``NAME.tif[t=3]`` (the plane's
label, ``unetkit.data.stack``: ``z=1,t=0``, or ``plane=3`` for a page sequence).

Per-image outputs that have no stack form are not written for stacks (``--probs``,
``--labelme``, ``--geojson``, ``--coco``, ``--zarr``; one warning line per stack says so).

**Memory.** Planes are read, predicted and written one at a time: the mask and the ids go to
their TIFFs page by page (each written in a thread of its own, one page queued at most), the
objects table row by row; what is kept is a summary row per plane and the montage's tiles.

**Atomicity.** Every file is written under a temporary name and renamed into place once the
last plane is in it, ``NAME.tif`` last: a killed run leaves no final file half-written (its
temporary files are removed by the next run), and ``--skip-existing`` skips a stack whose
outputs are all in place (its summary rows are read back from them). A stack is predicted
whole again after an interruption (no resuming from a plane).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.imageio import match_channels
from ..data.largeimage import output_stem
from ..data.stack import GENERIC_AXES, StackLayout, TiffStack, plane_label
from ..errors import UnetkitError
from ..files import atomic_path
from ..viz import overlay, save_png
from .options import OutputOptions
from .predict import Predictor
from .summary_rows import counts_row

log = logging.getLogger(__name__)

PREVIEW_PLANES = 16
PREVIEW_LONGEST = 2048
IMAGEJ_MAX_BYTES = 3584 << 20  # ImageJ hyperstacks are classic TIFFs (32-bit offsets)
_NOT_FOR_STACKS = {
    "save_probs": "--probs",
    "labelme": "--labelme",
    "geojson": "--geojson",
    "coco": "--coco",
    "zarr": "--zarr",
}


def stack_outputs(out_dir: Path, stem: str, objects: bool) -> list[Path]:
    """The files ``predict_stack`` writes for ``stem`` (the mask first)."""
    names = [f"{stem}.tif", f"{stem}_preview.png"]
    if objects:
        names += [f"{stem}_instances.tif", f"{stem}_objects.csv"]
    return [out_dir / n for n in names]


def _out_axes(plane_axes: str) -> str:
    """The plane axes of the outputs: the input's, ``I`` written as OME's generic ``Q``."""
    return plane_axes.replace("I", "Q")


def _imagej(plane_axes: str, nbytes: int) -> bool:
    return plane_axes in ("T", "Z", "TZ") and nbytes < IMAGEJ_MAX_BYTES


def _lut(palette: list[list[int]]) -> np.ndarray:
    """An ImageJ LUT (3, 256) uint8 from the model's palette (unused entries black)."""
    lut = np.zeros((3, 256), np.uint8)
    for index, rgb in enumerate(palette[:256]):
        lut[:, index] = [int(c) for c in rgb[:3]]
    return lut


# -- writing pages in a thread -------------------------------------------------------------------
_END, _ABORT = object(), object()


class _Aborted(Exception):
    pass


class _PageWriter:
    """A multi-page TIFF written under a temporary name by a thread of its own, from pages
    handed over one at a time (``put``); renamed into place by ``close``, removed by
    ``abort``. At most one page waits in the queue."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: type, options: dict):
        self.path, self.shape, self.dtype, self.options = path, shape, np.dtype(dtype), options
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"write {path.name}", daemon=True)
        self._thread.start()

    def _pages(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted
            yield item

    def _run(self) -> None:
        import tifffile

        options = dict(self.options)
        try:
            kinds = {k: options.pop(k, False) for k in ("bigtiff", "imagej", "ome")}
            with atomic_path(self.path) as tmp, tifffile.TiffWriter(tmp, **kinds) as writer:
                writer.write(self._pages(), shape=self.shape, dtype=self.dtype, **options)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by close()
            self._error = exc
            with contextlib.suppress(queue.Empty):  # a put() waiting on a full queue goes on
                self._queue.get_nowait()

    def _hand(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            if isinstance(self._error, UnetkitError | OSError | ValueError):
                raise UnetkitError(f"{self.path}: cannot write it ({self._error})") from None
            raise self._error

    def put(self, page: np.ndarray) -> None:
        self._hand(np.ascontiguousarray(page, dtype=self.dtype))

    def close(self) -> None:
        """Wait until the file is in place (every page must have been put)."""
        self._hand(_END)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop writing and remove the temporary file (no exception)."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                while self._thread.is_alive():
                    try:
                        self._queue.put(_ABORT, timeout=0.2)
                        break
                    except queue.Full:
                        with contextlib.suppress(queue.Empty):
                            self._queue.get_nowait()
            self._thread.join()


def _tiff_options(plane_axes: str, nbytes: int, imagej: bool, lut: np.ndarray | None) -> dict:
    axes = _out_axes(plane_axes) + "YX"
    if imagej:
        metadata: dict[str, Any] = {"axes": axes}
        if lut is not None:
            metadata["LUTs"] = [lut]
        return {"imagej": True, "metadata": metadata}
    return {
        "ome": True,
        "bigtiff": nbytes > (1 << 31),
        "compression": "zlib",
        "metadata": {"axes": axes},
    }


# -- the preview ---------------------------------------------------------------------------------
class _Montage:
    """Up to ``PREVIEW_PLANES`` planes spread over the stack, each an overlay shrunk by one
    stride so that the grid's longer side is at most ``PREVIEW_LONGEST`` pixels."""

    def __init__(self, layout: StackLayout, labels: list[str]):
        count = layout.count
        k = min(count, PREVIEW_PLANES)
        self.planes = sorted({int(round(x)) for x in np.linspace(0, count - 1, k)})
        self.cols = math.ceil(math.sqrt(len(self.planes)))
        self.rows = math.ceil(len(self.planes) / self.cols)
        longest = max(self.cols * layout.width, self.rows * layout.height)
        self.step = max(1, math.ceil(longest / PREVIEW_LONGEST))
        self.labels = labels
        self.tiles: dict[int, np.ndarray] = {}

    def add(self, plane: int, image: np.ndarray, mask: np.ndarray, predictor: Predictor, alpha):
        if plane not in self.planes:
            return
        info, s = predictor.info, self.step
        small = image[::s, ::s]
        self.tiles[plane] = overlay(
            small if small.shape[2] != 1 else small[:, :, 0],
            mask[::s, ::s],
            info.palette,
            alpha,
            info.classes,
            contours=True,
            ignore_index=info.ignore_index,
        )

    def picture(self) -> np.ndarray:
        import cv2

        gap = 2
        h, w = next(iter(self.tiles.values())).shape[:2]
        canvas = np.full(
            (self.rows * (h + gap) - gap, self.cols * (w + gap) - gap, 3), 255, np.uint8
        )
        scale = max(0.3, min(1.0, w / 400))
        for n, plane in enumerate(self.planes):
            r, c = divmod(n, self.cols)
            tile = np.ascontiguousarray(self.tiles[plane])
            text, origin = self.labels[plane], (4, 4 + int(14 * scale))
            for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
                cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width)
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
        return canvas


# -- the whole stack ------------------------------------------------------------------------------
def predict_stack(
    predictor: Predictor, path: Path, out_dir: Path, options: OutputOptions
) -> list[dict]:
    """Predict every plane of a TIFF stack (module docstring) and write its outputs.

    Args:
        predictor: the model.
        path: the stack.
        out_dir: where the outputs go.
        options: ``predict_paths``' options (``objects``, ``alpha``, ``pixel_size``,
            ``level``, and the per-image ones that stacks do not write).

    Returns:
        The ``summary.csv`` rows, one per plane.

    Raises:
        UnetkitError: an unreadable stack (``unetkit.data.stack``), more than 256 classes, an
            output that would replace the input, a plane the model cannot take.
    """

    info = predictor.info
    objects = bool(options.objects)
    if len(info.classes) > 256:
        raise UnetkitError(f"{path}: a mask of more than 256 classes cannot be a uint8 TIFF")
    targets = stack_outputs(out_dir, output_stem(path), objects)
    if any(t.resolve() == path.resolve() for t in targets):
        raise UnetkitError(
            f"{path}: its mask {targets[0]} would replace it; predict into another folder"
        )
    unused = [f for k, f in _NOT_FOR_STACKS.items() if getattr(options, k)]
    with TiffStack(path, options.level) as stack:
        layout = stack.layout
        if unused:
            log.warning("%s: a stack of %d planes: %s not written for stacks",
                        path, layout.count, ", ".join(unused))  # fmt: skip
        out_axes = _out_axes(layout.plane_axes)
        labels = [plane_label(out_axes, layout.index(i), i) for i in range(layout.count)]
        shape = (*layout.plane_shape, layout.height, layout.width)
        pixels = layout.count * layout.height * layout.width
        imagej = _imagej(layout.plane_axes, pixels)
        montage = _Montage(layout, labels)
        rows: list[dict] = []
        writers: list[_PageWriter] = []
        try:
            if objects:
                ids_options = _tiff_options(layout.plane_axes, 4 * pixels, False, None)
                writers.append(_PageWriter(targets[2], shape, np.int32, ids_options))
            mask_options = _tiff_options(layout.plane_axes, pixels, imagej, _lut(info.palette))
            mask_writer = _PageWriter(targets[0], shape, np.uint8, mask_options)
            writers.append(mask_writer)
            with contextlib.ExitStack() as files:
                table = None
                if objects:
                    tmp = files.enter_context(atomic_path(targets[3]))
                    table = _ObjectsTable(files.enter_context(open(tmp, "w", newline="")))
                for plane in range(layout.count):
                    name = f"{path} [{labels[plane]}]"
                    image = match_channels(stack.read(plane), info.preprocessing.channels, name)
                    scores: dict[int, float] = {}
                    if objects:
                        mask, ids, scores = predictor.predict_scored_objects(image)
                    else:
                        mask, ids = predictor.predict_mask(image), None
                    mask_writer.put(mask)
                    count = None
                    if table is not None and ids is not None:
                        writers[0].put(ids)
                        count = table.add(
                            predictor, layout, plane, image, mask, ids, options, scores
                        )
                    montage.add(plane, image, mask, predictor, options.alpha)
                    counts = np.bincount(mask.ravel(), minlength=len(info.classes))
                    name = f"{path.name}[{labels[plane]}]"
                    rows.append(counts_row(name, mask.shape, counts, info.classes, count))
                if objects:
                    writers[0].close()
            save_png(out_dir / f"{output_stem(path)}_preview.png", montage.picture())
            mask_writer.close()  # last: NAME.tif in place means the stack is done
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    return rows


class _ObjectsTable:
    """``NAME_objects.csv`` written row by row: ``plane`` (and ``t`` / ``z``), then the
    columns of ``unetkit.objects.measure.object_table``."""

    def __init__(self, handle):
        self.handle = handle
        self.writer: csv.DictWriter | None = None

    def add(self, predictor, layout, plane, image, mask, ids, options, scores) -> int:
        """The rows of one plane's objects (``scores``: id -> score); its object count."""
        from ..objects.labels import object_classes
        from ..objects.measure import object_fields, object_table

        names, pixel_size = predictor.info.classes, options.pixel_size
        unit = options.pixel_unit
        if self.writer is None:  # the header, before the first plane's rows
            fields = object_fields(image.shape[2], pixel_size, unit, score=True)
            fields = _object_fields(layout, fields)
            self.writer = csv.DictWriter(self.handle, fieldnames=fields, lineterminator="\n")
            self.writer.writeheader()
        classes = object_classes(ids, mask, len(names))
        where = _plane_columns(layout, plane)
        for row in object_table(ids, image, classes, names, pixel_size, unit, scores):
            self.writer.writerow({**where, **row})
        return int(ids.max()) if ids.size else 0


def _object_fields(layout: StackLayout, fields: list[str]) -> list[str]:
    axes = [] if layout.plane_axes in GENERIC_AXES else [a.lower() for a in layout.plane_axes]
    return ["plane", *axes, *fields]


def _plane_columns(layout: StackLayout, plane: int) -> dict:
    columns: dict[str, int] = {"plane": plane}
    if layout.plane_axes not in GENERIC_AXES:
        columns.update(zip((a.lower() for a in layout.plane_axes), layout.index(plane)))
    return columns


def stack_rows(predictor: Predictor, path: Path, out_dir: Path, objects: bool) -> list[dict]:
    """The ``summary.csv`` rows of a stack predicted before (``--skip-existing``), read back
    from its ``NAME.tif`` (and ``NAME_instances.tif``) page by page."""
    import tifffile

    targets = stack_outputs(out_dir, output_stem(path), objects)
    classes = predictor.classes
    rows = []
    try:
        with contextlib.ExitStack() as files:
            masks = files.enter_context(tifffile.TiffFile(targets[0])).series[0]
            ids = files.enter_context(tifffile.TiffFile(targets[2])).series[0] if objects else None
            plane_axes = masks.axes[:-2]
            plane_shape = tuple(int(n) for n in masks.shape[:-2])
            for plane in range(len(masks.pages)):
                mask = masks.asarray(key=plane)
                counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
                count = int(ids.asarray(key=plane).max()) if ids is not None else None
                index = tuple(int(i) for i in np.unravel_index(plane, plane_shape))
                label = plane_label(plane_axes, index, plane)
                rows.append(counts_row(f"{path.name}[{label}]", mask.shape, counts, classes, count))
    except UnetkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged output: predict again
        raise UnetkitError(f"{targets[0]}: cannot read the stack's outputs back ({exc})") from None
    return rows
