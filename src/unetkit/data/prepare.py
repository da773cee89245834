"""A folder of labelme JSON files -> a dataset folder, all or nothing.

Output layout::

    OUT_DIR/images/<stem>.png     lossless copy of the annotated image (EXIF orientation applied)
    OUT_DIR/masks/<stem>.png      palette PNG, pixel value = class index, 255 = ignore
    OUT_DIR/instances/<stem>.png  uint16 object ids, 0 = none, 1..N in shape order (labelme's
                                  instance rule, :func:`~unetkit.data.rasterize.rasterize_objects`);
                                  ``<stem>.tif`` (int32) when an image has over 65535 objects
    OUT_DIR/overlays/<stem>.png   image + class colours + outlines + legend of the classes present
    OUT_DIR/classes.txt           one class name per line, line i = index i
    OUT_DIR/dataset.json          classes, palette, ignore index, pixel share, count, split,
                                  ``"instances": true`` and the object count per image

Every problem in the folder is collected and reported in one error; on success the folder is
built under a temporary name and renamed into place, so OUT_DIR is never half-written. The
same input gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from ..config import TrainConfig
from ..errors import UnetkitError
from ..files import atomic_dir, write_text
from ..palette import make_palette
from ..viz import overlay, save_png
from .instances import PNG_MAX_ID, write_instances
from .labelme import (
    IGNORE_VALUE,
    LabelmeFile,
    class_values,
    load_image,
    load_labelme,
    read_label_list,
)
from .rasterize import compact_ids, paints_nothing, rasterize_objects
from .split import SMALL_SET, bands_not_images, kind_of, stratified_val
from .writers import write_image, write_mask

log = logging.getLogger(__name__)

DATASET_FORMAT = "unetkit-dataset"
DATASET_VERSION = 1


@dataclass
class PrepareReport:
    """What :func:`prepare` wrote.

    Attributes:
        out_dir: the dataset folder.
        classes: class names, index = mask value.
        n_images: number of image / mask pairs.
        class_share: fraction of labelled (non-ignore) pixels per class.
        split: ``{"train": stems, "val": stems}``.
        warnings: non-fatal findings (empty images, classes never used, ROI not found).
        n_objects: objects written to ``instances/``, all images together.
        split_note: why no image is held out, under the small-set rule (else empty).
    """

    out_dir: Path
    classes: list[str]
    n_images: int
    class_share: list[float]
    split: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)
    n_objects: int = 0
    split_note: str = ""


def roi_box(
    image: np.ndarray, threshold: float, min_area: float, max_area: float, margin: int = 0
) -> tuple[int, int, int, int] | None:
    """A region of interest: grey, binary threshold, contours; the largest with area in range
    (the crop a common PyTorch U-Net tutorial applies to photographed specimens).

    Args:
        image: (H, W, C) image.
        threshold: grey level; pixels above it are foreground.
        min_area, max_area: accepted contour areas (exclusive, as in the seed).
        margin: pixels added around the bounding box (clipped to the image).

    Returns:
        (top, left, bottom, right) crop box, or None when no contour fits.
    """
    if image.shape[2] >= 3:
        grey = image[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        grey = image[:, :, 0].astype(np.float32)
    binary = (grey > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    fitting = [c for c in contours if min_area < cv2.contourArea(c) < max_area]
    if not fitting:
        return None
    x, y, w, h = cv2.boundingRect(max(fitting, key=cv2.contourArea))
    height, width = image.shape[:2]
    margin = int(margin)  # the box slices the image: whole pixels
    return (
        max(y - margin, 0),
        max(x - margin, 0),
        min(y + h + margin, height),
        min(x + w + margin, width),
    )


def _stem(json_path: Path, root: Path) -> str:
    """Output stem: the JSON's path below ``root`` without suffix, sub-folders joined by ``__``."""
    return "__".join(json_path.relative_to(root).with_suffix("").parts)


def _load_all(root: Path, errors: list[str]) -> dict[str, LabelmeFile]:
    docs: dict[str, LabelmeFile] = {}
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            docs[_stem(path, root)] = load_labelme(path)
        except UnetkitError as exc:
            errors.append(str(exc))
    return docs


def _unknown_labels(docs: dict[str, LabelmeFile], values: dict[str, int]) -> list[str]:
    unknown: dict[str, list[str]] = defaultdict(list)
    for doc in docs.values():
        for label in sorted(doc.labels - set(values)):
            unknown[label].append(doc.path.name)
    return [
        f"unknown label {label!r} in {', '.join(files)} (not in the class list)"
        for label, files in sorted(unknown.items())
    ]


DEFAULT_VAL_FRACTION = TrainConfig.val_fraction


def _split(images: dict[str, np.ndarray], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """The recorded train / val split: ``val_fraction`` of the images (at least one when it is
    above 0 and there are two or more), stratified by size and background like ``train``'s
    (``unetkit.data.split.stratified_val``), so a rare kind of image keeps training images;
    none under the small-set rule (``unetkit.data.split.bands_not_images``)."""
    if not 0 <= val_fraction < 1:
        raise UnetkitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    stems = sorted(images)
    if val_fraction == 0 or len(stems) < 2 or bands_not_images(len(stems), val_fraction):
        return {"train": stems, "val": []}
    kinds = {stem: kind_of(images[stem]) for stem in stems}
    val = stratified_val(stems, kinds, val_fraction, seed)
    held_out = set(val)
    return {"train": [s for s in stems if s not in held_out], "val": val}


def _convert(
    doc: LabelmeFile,
    root: Path,
    values: dict[str, int],
    allow_outside: bool,
    crop_roi: Sequence[float] | None,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, class mask, instance ids) of one file, cropped to the ROI when asked."""
    image = load_image(doc, root, allow_outside)
    if image.dtype not in (np.uint8, np.uint16):  # float TIFF / .npy: no lossless PNG copy
        raise UnetkitError(
            f"{doc.path}: the image is {image.dtype}; prepare copies images as 8- or 16-bit "
            "PNG: convert it first"
        )
    mask, instances = rasterize_objects(doc.shapes, image.shape[:2], values)
    height, width = image.shape[:2]
    for shape in doc.shapes:  # dropped without a word before: say so, naming the shape
        if paints_nothing(shape, (height, width)):
            warnings.append(
                f"{doc.path}: shape {shape.index} ({shape.shape_type} {shape.label!r}) paints "
                f"no pixel of the {height}x{width} image (outside it, or of zero size)"
            )
    if crop_roi is not None:
        roi = cast("tuple[float, float, float] | tuple[float, float, float, int]", crop_roi)
        box = roi_box(image, *roi)
        if box is None:
            warnings.append(f"{doc.path}: no ROI contour in range {tuple(crop_roi)}; kept whole")
        else:
            top, left, bottom, right = box
            image, mask = image[top:bottom, left:right], mask[top:bottom, left:right]
            instances = compact_ids(instances[top:bottom, left:right])  # objects cropped away
    if not doc.shapes:
        warnings.append(f"{doc.path}: no shapes; the mask is all background")
    if not instances.size or instances.max() <= np.iinfo(np.uint16).max:
        instances = instances.astype(np.uint16)  # held until the folder is written: 2 B/px
    return image, mask, instances


def _check_out_dir(labelme_dir: Path, out_dir: Path, overwrite: bool) -> None:
    if not labelme_dir.is_dir():
        raise UnetkitError(f"{labelme_dir}: not a folder")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise UnetkitError(f"{out_dir}: exists and is not empty (use --overwrite)")
    if out_dir.resolve() == labelme_dir.resolve():
        raise UnetkitError(f"{out_dir}: the output folder cannot be the labelme folder")


def prepare(
    labelme_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels: list[str] | str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    allow_outside: bool = False,
    crop_roi: Sequence[float] | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Convert every labelme JSON under ``labelme_dir`` into a dataset folder.

    Args:
        labelme_dir: folder searched recursively for ``*.json``.
        out_dir: the dataset folder to create.
        labels: explicit class list (list, comma-separated string or labels file, labelme
            convention: ``__ignore__``, ``_background_``, classes); None discovers the labels
            (sorted, ``background`` = 0).
        val_fraction: share of images in the validation split; left at its default on fewer
            than 40 images none is held out (``train`` validates on a band of each image).
        seed: seed of the split.
        allow_outside: accept ``imagePath`` values that leave ``labelme_dir``.
        crop_roi: ``(threshold, min_area, max_area[, margin])`` to crop each image
            to its thresholded region of interest.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        A :class:`PrepareReport`.

    Raises:
        UnetkitError: listing every problem found (malformed shapes, unknown labels, missing
            or mis-sized images, ...); nothing is written then.
    """
    root, out = Path(labelme_dir), Path(out_dir)
    _check_out_dir(root, out, overwrite)
    errors: list[str] = []
    docs = _load_all(root, errors)
    explicit = read_label_list(labels) if labels is not None else None
    found = set().union(*(d.labels for d in docs.values())) if docs else set()
    classes, values = class_values(explicit, found)
    if explicit is not None:
        errors.extend(_unknown_labels(docs, values))
    if not docs and not errors:
        errors.append("no labelme JSON files found")
    warnings: list[str] = []
    converted: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for stem, doc in docs.items():
        if explicit is None or not doc.labels - set(values):
            try:
                converted[stem] = _convert(doc, root, values, allow_outside, crop_roi, warnings)
            except UnetkitError as exc:
                errors.append(str(exc))
    if errors:
        head = f"{len(errors)} problem(s) in {root}; nothing was written"
        raise UnetkitError(head + "\n  - " + "\n  - ".join(errors))
    return _write(out, overwrite, classes, converted, val_fraction, seed, warnings)


def _write(
    out: Path,
    overwrite: bool,
    classes: list[str],
    converted: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    val_fraction: float,
    seed: int,
    warnings: list[str],
) -> PrepareReport:
    palette = make_palette(len(classes))
    counts = np.zeros(len(classes), np.int64)
    channels = sorted({image.shape[2] for image, _, _ in converted.values()})
    objects: dict[str, int] = {}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for stem, (image, mask, instances) in converted.items():
            write_image(tmp / "images" / f"{stem}.png", image)
            write_mask(tmp / "masks" / f"{stem}.png", mask, palette)
            objects[stem] = int(instances.max()) if instances.size else 0  # ids are 1..N
            suffix = ".png" if objects[stem] <= PNG_MAX_ID else ".tif"
            write_instances(tmp / "instances" / f"{stem}{suffix}", instances)
            viz = overlay(
                image, mask, palette, class_names=classes, legend=True, ignore_index=IGNORE_VALUE
            )
            save_png(tmp / "overlays" / f"{stem}.png", viz)
            counts += np.bincount(mask[mask != IGNORE_VALUE].ravel(), minlength=len(classes))
        share = (counts / max(int(counts.sum()), 1)).round(6).tolist()
        unused = [c for c, n in zip(classes[1:], counts[1:]) if n == 0]
        if unused:
            warnings.append(f"classes never painted: {', '.join(unused)}")
        split = _split(
            {stem: image for stem, (image, _, _) in converted.items()}, val_fraction, seed
        )
        meta = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "classes": classes,
            "palette": palette,
            "ignore_index": IGNORE_VALUE,
            "channels": channels[0] if len(channels) == 1 else channels,
            "n_images": len(converted),
            "class_share": share,
            "split": split,
            "instances": True,
            "n_objects": sum(objects.values()),
            "objects_per_image": objects,
        }
        write_text(tmp / "classes.txt", "\n".join(classes) + "\n")
        write_text(tmp / "dataset.json", json.dumps(meta, indent=2) + "\n")
    for message in warnings:
        log.warning("%s", message)
    n_objects = sum(objects.values())
    note = ""
    if bands_not_images(len(converted), val_fraction) and len(converted) > 1:
        note = (
            f"no image held out: {len(converted)} images are fewer than {SMALL_SET}; "
            "`unetkit train` validates on a held-out band of each image instead "
            "(a --val-fraction other than 0.2 holds out whole images)"
        )
    return PrepareReport(out, classes, len(converted), share, split, warnings, n_objects, note)
