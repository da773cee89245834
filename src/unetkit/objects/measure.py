"""Measurements of objects: one row per object of an instance label image, and its CSV.

Columns (``object_fields``): ``id``, ``class``, area, perimeter, centroid, bounding box,
equivalent diameter, eccentricity, solidity, then the mean and maximum intensity of every image
channel. Every column with a length or an area names its unit: without a pixel size, pixels
(``area_px``, ``perimeter_px``, ``centroid_y_px``, ...); with one (e.g. 0.5 um per pixel),
the physical unit, squared for the area (``area_um2``, ``perimeter_um``, ``centroid_y_um``,
``equivalent_diameter_um``), and a ``pixel_size_um`` column holds the pixel size. The bounding
box stays in pixels either way (``bbox_y0_px`` ... ``bbox_x1_px``; ``y1`` / ``x1`` exclusive),
as it indexes the label image (as CellProfiler's bounding box does; QuPath-style physical
positions are the centroid's). Floats are rounded to 4 decimals.
"""

from __future__ import annotations

import os
import re

import numpy as np
from skimage.measure import regionprops_table

from ..errors import UnetkitError
from ..files import write_csv

DECIMALS = 4
_SCALED = ("area", "perimeter", "centroid_y", "centroid_x", "equivalent_diameter")
_SHAPE = ("eccentricity", "solidity")
_BBOX = ("bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px")
_UNIT = re.compile(r"[A-Za-z]{1,8}")
_PROPS = (
    "label",
    "area",
    "perimeter",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
)


def _suffixes(pixel_size: float | None, unit: str) -> tuple[str, str]:
    """(length suffix, area suffix) of the column names: ``_px`` / ``_px``, or ``_um`` /
    ``_um2`` for unit "um"."""
    if pixel_size is None:
        return "_px", "_px"
    if not _UNIT.fullmatch(unit):
        raise UnetkitError(f"pixel unit must be 1-8 letters (e.g. um, nm, mm); got {unit!r}")
    return f"_{unit}", f"_{unit}2"


def object_fields(
    n_channels: int, pixel_size: float | None = None, unit: str = "um", score: bool = False
) -> list[str]:
    """The columns of ``object_table`` rows, in order (a CSV header even without objects).

    Args:
        n_channels: image channels measured (0 without an image, 1 for a grayscale image).
        pixel_size: physical size of a pixel, or None for pixel units.
        unit: the unit of ``pixel_size`` (letters, e.g. "um", "nm", "mm"), in the names.
        score: a ``score`` column after ``class`` (predicted objects).

    Returns:
        Column names.

    Raises:
        UnetkitError: a unit that is not 1-8 letters (with a pixel size).
    """
    length, area = _suffixes(pixel_size, unit)
    scaled = [f"{name}{area if name == 'area' else length}" for name in _SCALED]
    fields = ["id", "class", *["score"] * score, *scaled[:4], *_BBOX, scaled[4], *_SHAPE]
    for c in range(n_channels):
        fields += [f"mean_intensity_c{c}", f"max_intensity_c{c}"]
    if pixel_size is not None:
        fields.append(f"pixel_size{length}")
    return fields


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise UnetkitError(
            f"instance labels must be an (H, W) integer array; got {labels.shape} {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise UnetkitError(f"instance ids must be >= 0; found {int(labels.min())}")
    if labels.dtype == bool or labels.dtype == np.uint64:
        labels = labels.astype(np.uint8 if labels.dtype == bool else np.int64)
    return labels


def _channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The image as (H, W, C) in a dtype regionprops accepts, after checking its size."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[:2] != shape:
        raise UnetkitError(
            f"image {image.shape[:2] if image.ndim >= 2 else image.shape} and labels {shape} "
            "differ in size"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype == bool:
        image = image.astype(np.uint8)
    elif image.dtype == np.float16:
        image = image.astype(np.float32)
    return image


def _class_label(
    object_id: int, classes: dict[int, int] | None, class_names: list[str] | None
) -> int | str:
    cls = 1 if classes is None else int(classes.get(object_id, 0))
    if class_names is None:
        return cls
    return class_names[cls] if 0 <= cls < len(class_names) else str(cls)


def object_table(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    classes: dict[int, int] | None = None,
    class_names: list[str] | None = None,
    pixel_size: float | None = None,
    unit: str = "um",
    scores: dict[int, float] | None = None,
) -> list[dict]:
    """Measure every object of an instance label image (``skimage.measure.regionprops_table``).

    Args:
        labels: (H, W) integer ids, 0 = background.
        image: (H, W) or (H, W, C) image (uint8, uint16, float) for the intensity columns,
            reported in its own units; None = no intensity columns.
        classes: object id -> class index (``object_classes``); None = every object is class 1.
            An id missing from it is class 0.
        class_names: names by class index; the ``class`` column then holds names.
        pixel_size: physical size of a pixel (e.g. 0.5 um): area in unit², lengths and
            centroid in the unit, plus a ``pixel_size_<unit>`` column. The bounding box stays
            in pixels.
        unit: the unit of ``pixel_size``, in the column names (``area_um2``, ...).
        scores: object id -> score (the mean object probability of a predicted object): a
            ``score`` column after ``class``; None = no such column.

    Returns:
        One dict per object, sorted by id, keys as ``object_fields``; [] without objects.

    Raises:
        UnetkitError: labels that are not (H, W) non-negative integers, an image of another
            size, a pixel size that is not > 0, or a unit that is not 1-8 letters.
    """
    labels = _check_labels(labels)
    length, area = _suffixes(pixel_size, unit)
    if pixel_size is not None and not pixel_size > 0:
        raise UnetkitError(f"pixel size must be > 0; got {pixel_size}")
    channels = None if image is None else _channels(image, labels.shape)
    if not labels.any():
        return []
    props = _PROPS + (("intensity_mean", "intensity_max") if channels is not None else ())
    table = regionprops_table(labels, channels, properties=props)
    scale = 1.0 if pixel_size is None else float(pixel_size)
    columns: dict[str, np.ndarray] = {
        f"area{area}": table["area"] * scale**2,
        f"perimeter{length}": table["perimeter"] * scale,
        f"centroid_y{length}": table["centroid-0"] * scale,
        f"centroid_x{length}": table["centroid-1"] * scale,
        f"equivalent_diameter{length}": table["equivalent_diameter_area"] * scale,
    }
    columns = {k: np.round(v, DECIMALS) for k, v in columns.items()}
    if pixel_size is None:
        columns["area_px"] = table["area"].astype(np.int64)
    for name, key in zip(_BBOX, ("bbox-0", "bbox-1", "bbox-2", "bbox-3")):
        columns[name] = table[key].astype(np.int64)
    for name in _SHAPE:
        columns[name] = np.round(table[name], DECIMALS)
    n_channels = 0 if channels is None else channels.shape[2]
    integer = channels is not None and np.issubdtype(channels.dtype, np.integer)
    for c in range(n_channels):
        columns[f"mean_intensity_c{c}"] = np.round(table[f"intensity_mean-{c}"], DECIMALS)
        peak = table[f"intensity_max-{c}"]
        columns[f"max_intensity_c{c}"] = (
            np.rint(peak).astype(np.int64) if integer else np.round(peak, DECIMALS)
        )
    fields = object_fields(n_channels, pixel_size, unit, scores is not None)
    ids = table["label"].astype(np.int64)
    lists = {k: v.tolist() for k, v in columns.items()}  # Python ints and floats
    rows = []
    for i, object_id in enumerate(ids.tolist()):
        row: dict = {"id": object_id, "class": _class_label(object_id, classes, class_names)}
        for name in fields[2:]:
            if name == "score":
                assert scores is not None  # object_fields lists it only with scores
                row[name] = round(float(scores.get(object_id, 1.0)), DECIMALS)
            elif name == f"pixel_size{length}":
                assert pixel_size is not None  # object_fields lists it only with a pixel size
                row[name] = float(pixel_size)
            else:
                row[name] = lists[name][i]
        rows.append(row)
    return rows


def write_objects_csv(path: str | os.PathLike, rows: list[dict], fields: list[str]) -> None:
    """Atomically write ``object_table`` rows as CSV; the header is written even without rows.

    Args:
        path: the CSV file.
        rows: dicts with exactly the keys of ``fields``.
        fields: column order (``object_fields``).
    """
    write_csv(path, rows, fields)
