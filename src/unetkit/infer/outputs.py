"""Predict files and folders and write what people look at: masks, colours, overlays, JSON.

Per input image ``NAME`` (at the input's size): ``NAME.png`` (class-index palette PNG, lossless),
``NAME_color.png``, ``NAME_overlay.png`` (blend + contours; a legend strip of the classes
present with ``legend``), optionally
``NAME_probs.npy`` (float16 ``(K, H, W)``) and ``NAME.json`` (labelme 5.x polygons of the
predicted regions, so they can be corrected in labelme). ``summary.csv`` lists, per image, the
classes present and their pixel areas. Every file is written atomically; an input that cannot
be read is reported in one line and skipped.

With objects (instance models always; semantic models with ``objects=True``: the connected
components of each class): ``NAME_instances.png`` (uint16 ids, 0 = background; ``.tif`` int32
beyond 65535 objects), ``NAME_objects.csv`` (one row per object: class, area, perimeter,
centroid, bounding box, equivalent diameter, eccentricity, solidity, mean / max intensity per
channel; physical units with ``pixel_size``), ``NAME_objects.png`` (each object in its own
colour with its outline), ``NAME.json`` with one labelme polygon per object (``group_id`` = its
id), ``NAME.geojson`` (a QuPath-importable FeatureCollection) and ``coco.json`` (COCO instances
for the folder) on request; ``summary.csv`` gains the object count.

TIFFs too large for memory are read by region (``unetkit.infer.large``: ``NAME.tif`` and
``NAME_preview.png``, resumable; with ``zarr`` the mask is ``NAME.ome.zarr``, an OME-NGFF
label image, instead of ``NAME.tif``). Multi-page TIFFs (time-lapses, z-stacks) are predicted
plane by plane (``unetkit.infer.stack``: a multi-page ``NAME.tif``, one summary row per plane).
Under ``torchrun`` the processes share the inputs and
rank 0 writes the folder's files (``unetkit.infer.shard``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.imageio import read_mask
from ..data.largeimage import LARGE_PIXELS, output_stem, pixel_size_of
from ..data.writers import write_image
from ..distributed import DistInfo
from ..errors import UnetkitError
from ..files import clean_stale_temps, write_text
from ..progress import progress as progress_bar
from .inputs import collect_inputs, level_fits, no_objects_by_region, read_input
from .options import OutputOptions, given_pixel
from .predict import Predictor
from .shard import gather, my_share
from .summary_rows import counts_row, summary_row, write_summary
from .writers import existing_instances, merge_coco, output_paths, remove_own_temps, write_outputs

log = logging.getLogger(__name__)


@dataclass
class PredictReport:
    """What ``predict_paths`` did: rows of ``summary.csv`` and the failed inputs."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def record_failure(report: PredictReport, path: Path, exc: Exception) -> None:
    """Log a bad input in one line naming it, and add it to ``report.failed``."""
    report.failed.append((path, _failure(path, exc)))


def _failure(path: Path, exc: Exception) -> str:
    """Log a bad input in one line naming it; that line."""
    message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    log.error("skipped %s", message)
    return message


def _predict_one(
    predictor: Predictor, path: Path, out_dir: Path, options: OutputOptions
) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """Predict one image and write its outputs; returns its class mask, object ids and COCO
    document (``options.coco``)."""
    from ..objects.labels import connected_objects
    from ..objects.postprocess import object_scores, separate_objects

    info = predictor.info
    stem = output_stem(path)
    image = read_input(path, info.preprocessing.channels, options)
    ids, scores = None, None
    if options.save_probs:
        probs = predictor.predict_proba(image)
        write_image(out_dir / f"{stem}_probs.npy", probs.astype(np.float16))
        if predictor.instance:
            mask, ids = separate_objects(probs, predictor.objects_config)
        else:
            mask = predictor.probs_to_mask(probs)
        if options.objects and ids is None:
            ids = connected_objects(mask, ignore_index=info.ignore_index)
        if ids is not None:
            scores = object_scores(ids, predictor.objectness(probs))
    elif options.objects:
        mask, ids, scores = predictor.predict_scored_objects(image)
    else:
        mask = predictor.predict_mask(image)
    coco = write_outputs(predictor, image, mask, ids, scores, path, out_dir, options)
    return mask, ids, coco


def predict_paths(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    save_probs: bool = False,
    labelme: bool = False,
    skip_existing: bool = False,
    min_area: float | None = None,
    alpha: float = 0.5,
    progress: bool = True,
    objects: bool | None = None,
    pixel_size: float | None = None,
    pixel_unit: str = "um",
    geojson: bool = False,
    coco: bool = False,
    coco_format: str = "rle",
    legend: bool = False,
    level: int | None = None,
    large_pixels: int | None = None,
    background: str | None = None,
    zarr: bool = False,
    shard: DistInfo | None = None,
) -> PredictReport:
    """Predict every image named by ``inputs`` and write its outputs into ``out_dir``.

    Args:
        predictor: the model.
        inputs: files, folders, glob patterns (see ``collect_inputs``).
        out_dir: created if missing.
        save_probs: also write ``NAME_probs.npy`` (float16 ``(K, H, W)``).
        labelme: also write ``NAME.json`` (labelme polygons of the predicted regions).
        skip_existing: leave images whose outputs all exist alone (their masks still count in
            ``summary.csv``).
        min_area: regions under this many pixels get no contour / polygon (default:
            ``predictor.config.min_area``).
        alpha: colour weight of the overlay.
        progress: a progress bar over images (and over tiles of big images).
        objects: write the object outputs (module docstring); None = for instance models.
            ``geojson``, ``coco`` and ``pixel_size`` imply objects.
        pixel_size: physical size of a pixel in ``pixel_unit`` (of the image as predicted:
            the pyramid level with ``level``), instead of the one its metadata states
            (``unetkit.data.largeimage.pixel_size_of``); object measurements in those units,
            and written into the masks (PNG pHYs, TIFF resolution, OME-Zarr scale). A pixel
            size implies objects for images read whole only, never for images read by region.
        pixel_unit: ``nm``, ``um`` (default), ``mm``, ``cm`` or ``m``.
        geojson: also ``NAME.geojson`` (objects as QuPath detections).
        coco: also ``coco.json``: the folder's objects as COCO instance annotations (with a
            ``score`` each, so that it is also a results file for ``COCOeval``).
        coco_format: ``coco.json``'s segmentations: "rle" (exact, holes included) or "polygon"
            (edge-traced; exact for objects without holes) (``objects.formats.coco_document``).
        legend: a legend strip (the classes present) right of each overlay; without it the
            overlay has the input's size.
        level: predict TIFF inputs at this pyramid level, read by region.
        large_pixels: TIFFs above this many pixels are read by region and written as a tiled
            BigTIFF mask plus a preview (``unetkit.infer.large``; default
            ``unetkit.data.largeimage.LARGE_PIXELS``).
        background: images read by region: ``bright`` / ``dark`` skips the network tiles that
            hold only background brighter / darker than an Otsu threshold of the preview
            (``unetkit.infer.large``).
        zarr: images read by region: the mask as ``NAME.ome.zarr`` (an OME-NGFF 0.4
            multiscale label image, ``unetkit.infer.zarr_out``) instead of ``NAME.tif``.
            Images read whole are not affected.
        shard: this process's rank among those of ``torchrun`` (``unetkit.infer.shard``):
            every rank calls this with the same arguments and predicts its share; rank 0
            writes ``summary.csv`` and ``coco.json``. The report is the whole run's on every
            rank.

    Returns:
        A ``PredictReport``; unreadable inputs are in ``failed`` (each logged in one line).

    Raises:
        UnetkitError: inputs that match nothing, or colliding output names.
    """
    shard = shard or DistInfo()
    out = Path(out_dir)
    # objects asked for (a pixel size alone does not ask for them of images read by region)
    region_objects = bool(objects) or geojson or coco or (objects is None and predictor.instance)
    if objects is None:
        objects = predictor.instance or geojson or coco or pixel_size is not None
    options = OutputOptions(
        save_probs=save_probs,
        labelme=labelme,
        alpha=alpha,
        min_area=predictor.config.min_area if min_area is None else min_area,
        objects=objects,
        region_objects=region_objects,
        pixel=given_pixel(pixel_size, pixel_unit),
        large_pixels=LARGE_PIXELS if large_pixels is None else large_pixels,
        geojson=geojson,
        coco=coco,
        coco_format=coco_format,
        legend=legend,
        level=level,
        background=background,
        zarr=zarr,
    )  # checked here, before any image is read
    paths = collect_inputs(inputs, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    if shard.is_main:
        clean_stale_temps(out)  # what a killed run left half-written
    predictor.progress = progress and shard.is_main
    from ..data.largeimage import streamable

    threshold = options.large_pixels
    large = [streamable(path, level, threshold) for path in paths]
    # objects of a pyramid level (--level) that fits in memory: that level read whole
    by_level: dict[int, int] = {}
    if level is not None and region_objects:
        for i, path in enumerate(paths):
            if large[i] and level_fits(path, level, threshold):
                large[i], by_level[i] = False, level
    from ..data.stack import is_stack  # TIFF stacks: unetkit.infer.stack

    stack = [not large[i] and is_stack(path, level) for i, path in enumerate(paths)]
    whole = [i for i, by_region in enumerate(large) if not by_region]
    mine = {whole[n] for n in my_share([paths[i] for i in whole], shard)}  # a pixel share
    todo = [i for i in range(len(paths)) if large[i] or i in mine]  # by region: every rank
    outcomes: list[_Outcome] = []
    for i in progress_bar(todo, desc="predict", unit="img", disable=not predictor.progress):
        at_level = (level or 0) if large[i] or by_level.get(i) is not None else 0
        size = options.pixel or pixel_size_of(paths[i], at_level)  # given, else the image's
        own = replace(options, pixel=size, read_level=by_level.get(i))
        if large[i]:
            outcome = _predict_by_region(predictor, paths[i], out, own, skip_existing, shard)
        elif stack[i]:
            outcome = _predict_stack(predictor, paths[i], out, own, skip_existing)
        else:
            outcome = _predict_whole(predictor, paths[i], out, own, skip_existing)
        if outcome is not None:
            outcome.index = i
            outcomes.append(outcome)
    # every rank's outcomes, in input order (summary.csv and coco.json as one process has them)
    outcomes = sorted((o for part in gather(outcomes, shard) for o in part), key=_index)
    report = PredictReport()
    done: list[Path] = [out / "summary.csv"]
    for outcome in outcomes:
        path = paths[outcome.index]
        if outcome.failure is not None:
            report.failed.append((path, outcome.failure))
            continue
        (report.written if outcome.written else report.skipped).append(path)
        report.rows.extend(outcome.rows or [outcome.row])
        done += outcome.targets
    if shard.is_main:
        write_summary(out / "summary.csv", report.rows, predictor.classes, objects)
        if coco:
            documents = [doc for outcome in outcomes for doc in outcome.coco]
            write_text(out / "coco.json", json.dumps(merge_coco(documents)))
            done.append(out / "coco.json")
        remove_own_temps(out, done)
    return report  # the caller says what was done (the CLI: one line on stdout)


@dataclass
class _Outcome:
    """What became of one input (gathered from every rank in a sharded run)."""

    index: int = -1
    row: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)  # a stack's: one per plane, instead of row
    written: bool = True
    targets: list[Path] = field(default_factory=list)
    coco: list[dict] = field(default_factory=list)
    failure: str | None = None


def _index(outcome: _Outcome) -> int:
    return outcome.index


def _predict_by_region(
    predictor: Predictor,
    path: Path,
    out: Path,
    options: OutputOptions,
    skip_existing: bool,
    shard: DistInfo,
) -> _Outcome | None:
    """One image read by region (``unetkit.infer.large``); every rank takes part, rank 0
    alone has an outcome."""
    from .large import count_classes, finished, large_outputs, predict_large
    from .strips import remove_parts

    targets = large_outputs(out, output_stem(path), options.zarr)
    try:
        if options.region_objects:
            raise UnetkitError(no_objects_by_region(path, options))
        if skip_existing and all(finished(t) for t in targets):
            if not shard.is_main:
                return None
            remove_parts(out, output_stem(path))  # what a run stopped after assembling left
            counts, size = count_classes(targets[0], len(predictor.classes))
            written = False
        else:
            result = predict_large(
                predictor, path, out, options.level or 0, options.alpha,
                shard=shard, background=options.background, zarr=options.zarr,
                pixel_size=options.pixel,
            )  # fmt: skip
            if result is None:  # another rank's outcome
                return None
            counts, size = result
            written = True
    except (UnetkitError, OSError, ValueError) as exc:
        if not shard.is_main:
            return None  # rank 0 reports it
        return _Outcome(failure=_failure(path, exc))
    row = counts_row(path.name, size, counts, predictor.classes)
    return _Outcome(row=row, written=written, targets=targets)


def _predict_stack(
    predictor: Predictor, path: Path, out: Path, options: OutputOptions, skip_existing: bool
) -> _Outcome:
    """A TIFF stack, plane by plane (``unetkit.infer.stack``): its outputs, or why not."""
    from .stack import predict_stack, stack_outputs, stack_rows

    targets = stack_outputs(out, output_stem(path), options.objects)
    try:
        rows, written = None, True
        if skip_existing and all(t.is_file() for t in targets):
            with contextlib.suppress(UnetkitError):  # outputs not readable: predicted again
                rows, written = stack_rows(predictor, path, out, options.objects), False
        if rows is None:
            rows = predict_stack(predictor, path, out, options)
    except (UnetkitError, OSError, ValueError) as exc:
        return _Outcome(failure=_failure(path, exc))
    return _Outcome(rows=rows, written=written, targets=targets)


def _predict_whole(
    predictor: Predictor, path: Path, out: Path, options: OutputOptions, skip_existing: bool
) -> _Outcome:
    """One image read whole: its outputs, or why not."""
    from ..data.instances import read_instances

    objects, coco = options.objects, options.coco
    stem = output_stem(path)
    try:
        targets = output_paths(out, stem, options)
        if objects:
            targets[targets.index(out / f"{stem}_instances.png")] = existing_instances(out, stem)
        # coco.json needs every image's objects: nothing is skipped for it
        if skip_existing and not coco and all(t.is_file() for t in targets):
            mask = read_mask(targets[0])
            ids = read_instances(existing_instances(out, stem)) if objects else None
            written, document = False, None
        else:
            mask, ids, document = _predict_one(predictor, path, out, options)
            written = True
    except (UnetkitError, OSError, ValueError) as exc:
        return _Outcome(failure=_failure(path, exc))
    count = (int(ids.max()) if ids.size else 0) if ids is not None else None
    row = summary_row(path.name, mask, predictor.classes, count)
    documents = [] if document is None else [document]
    return _Outcome(row=row, written=written, targets=targets, coco=documents)
