"""Writing the outputs of one image read whole (``unetkit.infer.outputs``): mask, colour,
overlay, labelme polygons, the object outputs, and the folder's ``coco.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..data.labelme import labelme_document, polygon_shape
from ..data.largeimage import output_stem
from ..data.writers import write_mask
from ..files import clean_stale_temps, remove_temp_dirs, write_text
from ..viz import colorize, overlay, save_png
from .options import OutputOptions
from .predict import Predictor


def mask_to_labelme(
    mask: np.ndarray,
    class_names: list[str],
    image_path: str,
    min_area: float = 0,
    ignore_index: int = 255,
) -> dict:
    """Predicted regions as labelme polygons (one per outer contour of each class > 0).

    Args:
        mask: (H, W) integer class indices.
        class_names: names by class index (labels of the shapes).
        image_path: ``imagePath`` (relative to the JSON file, as labelme resolves it).
        min_area: regions with a contour area below this are left out.
        ignore_index: never exported.

    Returns:
        A labelme 5.x document (``version``, ``flags``, ``shapes``, ``imagePath``,
        ``imageData`` null, ``imageHeight``, ``imageWidth``).
    """
    shapes = []
    for cls in np.unique(mask):
        if cls <= 0 or cls == ignore_index or cls >= len(class_names):
            continue
        binary = (mask == cls).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if len(contour) < 3 or cv2.contourArea(contour) < min_area:
                continue
            points = contour[:, 0, :].astype(float).tolist()  # (N, 2) x, y
            shapes.append(polygon_shape(class_names[int(cls)], points))
    return labelme_document(shapes, image_path, mask.shape[:2])


def output_paths(out_dir: Path, stem: str, options: OutputOptions) -> list[Path]:
    """The files one image read whole writes (``options``: those of ``predict_paths``)."""
    names = [f"{stem}.png", f"{stem}_color.png", f"{stem}_overlay.png"]
    names += [f"{stem}_probs.npy"] * options.save_probs + [f"{stem}.json"] * options.labelme
    if options.objects:
        names += [f"{stem}_instances.png", f"{stem}_objects.csv", f"{stem}_objects.png"]
        names += [f"{stem}.geojson"] * options.geojson
    return [out_dir / n for n in names]


def existing_instances(out_dir: Path, stem: str) -> Path:
    """``NAME_instances.png``, or the ``.tif`` written when the ids did not fit 16 bits."""
    png = out_dir / f"{stem}_instances.png"
    tif = png.with_suffix(".tif")
    return tif if tif.is_file() and not png.is_file() else png


def remove_own_temps(out_dir: Path, targets: list[Path]) -> None:
    """Remove the temporary files of ``targets`` (and the temporary folders of targets that
    are folders: ``NAME.ome.zarr``), whatever their age.

    Called once every target is in place: a temporary file of one of them can only be what a
    killed write left (``clean_stale_temps`` by default waits until such files are 10 s old,
    so a rerun right after a kill would keep them, and it never removes folders).
    """
    clean_stale_temps(out_dir, min_age=0, targets=targets)
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            remove_temp_dirs(target)


def write_outputs(
    predictor: Predictor,
    image: np.ndarray,
    mask: np.ndarray,
    ids: np.ndarray | None,
    scores: dict[int, float] | None,
    path: Path,
    out_dir: Path,
    options: OutputOptions,
) -> dict | None:
    """The outputs of one image read whole but ``NAME_probs.npy``: mask, colour, overlay, and
    the object outputs (``ids`` given) or the labelme polygons of its regions; returns the
    image's COCO document (``options.coco``, ``ids`` given)."""
    info = predictor.info
    stem = output_stem(path)
    write_mask(out_dir / f"{stem}.png", mask, info.palette, options.pixel)
    save_png(out_dir / f"{stem}_color.png", colorize(mask, info.palette, info.ignore_index))
    blended = overlay(
        image,
        mask,
        info.palette,
        options.alpha,
        info.classes,
        contours=True,
        min_area=options.min_area,
        legend=options.legend,
        ignore_index=info.ignore_index,
    )
    save_png(out_dir / f"{stem}_overlay.png", blended)
    rel = os.path.relpath(path.resolve(), out_dir.resolve())
    if ids is not None:
        return write_objects(predictor, image, mask, ids, path, out_dir, options, rel, scores)
    if options.labelme:
        doc = mask_to_labelme(mask, info.classes, rel, options.min_area, info.ignore_index)
        write_text(out_dir / f"{stem}.json", json.dumps(doc, indent=2))
    return None


def write_objects(
    predictor: Predictor,
    image: np.ndarray,
    mask: np.ndarray,
    ids: np.ndarray,
    path: Path,
    out_dir: Path,
    options: OutputOptions,
    rel: str,
    scores: dict[int, float] | None = None,
) -> dict | None:
    """The object outputs of one image; returns its share of ``coco.json`` (a COCO document,
    with ``options.coco``). ``scores``: object id -> score (the ``score`` column, COCO
    ``score``)."""
    from ..data.instances import instances_path, write_instances
    from ..objects.formats import coco_document, geojson_objects, labelme_objects
    from ..objects.labels import object_classes
    from ..objects.measure import object_fields, object_table, write_objects_csv
    from ..viz import object_overlay

    info, stem = predictor.info, output_stem(path)
    count = int(ids.max()) if ids.size else 0
    target = instances_path(out_dir, stem, count)
    other = target.with_suffix(".tif" if target.suffix == ".png" else ".png")
    write_instances(target, ids)
    other.unlink(missing_ok=True)  # a previous run's file of the other kind is stale now
    classes = object_classes(ids, mask, len(info.classes))
    channels = 1 if image.ndim == 2 else image.shape[2]
    unit = options.pixel_unit
    scores = {} if scores is None else scores
    rows = object_table(ids, image, classes, info.classes, options.pixel_size, unit, scores)
    fields = object_fields(channels, options.pixel_size, unit, score=True)
    write_objects_csv(out_dir / f"{stem}_objects.csv", rows, fields)
    save_png(out_dir / f"{stem}_objects.png", object_overlay(image, ids))
    if options.labelme:
        doc = labelme_objects(ids, classes, info.classes, rel)
        write_text(out_dir / f"{stem}.json", json.dumps(doc, indent=2))
    if options.geojson:
        doc = geojson_objects(ids, classes, info.classes, image_name=path.name, table=rows)
        write_text(out_dir / f"{stem}.geojson", json.dumps(doc))
    if not options.coco:
        return None
    entry = (path.name, *ids.shape, ids, classes)
    return coco_document([entry], info.classes, options.coco_format, scores=[scores])


def merge_coco(documents: list[dict]) -> dict:
    """One COCO document from per-image ones: image and annotation ids renumbered from 1."""
    merged: dict = {"images": [], "annotations": [], "categories": []}
    next_image, next_ann = 1, 1
    for doc in documents:
        merged["categories"] = merged["categories"] or doc["categories"]
        remap = {}
        for image in doc["images"]:
            remap[image["id"]] = next_image
            merged["images"].append({**image, "id": next_image})
            next_image += 1
        for ann in doc["annotations"]:
            merged["annotations"].append(
                {**ann, "id": next_ann, "image_id": remap[ann["image_id"]]}
            )
            next_ann += 1
    return merged
