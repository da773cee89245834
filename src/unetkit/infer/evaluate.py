"""Score predictions against ground truth: a model on a dataset folder, or two mask folders.

Writes into the report folder (``unetkit.infer.report``, each file atomically):
``metrics.json`` (``mean_iou``, ``mean_dice`` (foreground), ``pixel_accuracy``,
``pixel_error``, ``per_class`` IoU / Dice / precision / recall / support), ``per_image.csv``
(with ``pixel_error`` per image for two-class tasks), ``confusion.csv`` (rows = truth, columns
= prediction) and ``confusion.png``. Ground-truth pixels equal to the ignore index count
nowhere; the metrics are accumulated by ``unetkit.infer.scoring.score_pairs``.

Objects are scored too (``unetkit.objects.metrics``: AP at IoU 0.5 / 0.75, the DSB 2018 mean
AP over 0.5:0.95, F1 at 0.5, panoptic quality, count error, merges and splits): per image in
``per_image.csv`` (``obj_*`` columns), pooled under ``objects`` in ``metrics.json``. True
objects are the dataset's ``instances/`` where it has them, else the connected components of
each class of the true mask; predicted objects are an instance model's watershed objects,
``NAME_instances.png`` of a prediction folder, or else the connected components of the
predicted mask (what a semantic model gives). With more than one object class, objects match
only within their class.

The ISBI 2012 adapted Rand error (``adapted_rand_error``, per image and averaged) is a
membrane / cell-boundary metric: it is computed only when asked for (``rand_error=True`` in
:func:`~unetkit.infer.scoring.score_pairs`, :func:`evaluate_dirs` and :func:`evaluate_model`),
never from the class count or names, and only for two classes (membrane = class 1). For objects
on a background it would score the background's connected regions, which means nothing there.

Two-class 0/255 masks are mapped to classes 0/1 (255 -> 1), decided from every mask with
:func:`unetkit.data.layout.decide_binary_255`: for a dataset folder by ``describe_dataset``;
for two mask folders once for the ground truth and once for the predictions (each decision is
logged). Masks that mix 0/1 and 0/255 are an error naming a file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PredictConfig
from ..data.imageio import read_image, read_mask
from ..data.instances import read_instances
from ..data.layout import all_mask_values, decide_binary_255, map_binary_255
from ..errors import UnetkitError
from ..objects.labels import regions_of
from ..progress import progress as progress_bar
from .report import write_report
from .scoring import score_pairs

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_NOT_MASKS = ("_color", "_overlay", "_instances", "_objects")


def select_stems(info, split: str = "auto") -> list[str]:
    """The stems to evaluate: ``auto`` = the validation split if defined, else all.

    Raises:
        UnetkitError: a split name the dataset does not define.
    """
    splits = info.split or {}
    if split == "all" or (split == "auto" and not splits.get("val")):
        return list(info.stems)
    name = "val" if split == "auto" else split
    if name not in splits:
        known = ", ".join(["all", *splits]) or "all"
        raise UnetkitError(f"{info.root}: no split {name!r} (known: {known})")
    stems = [s for s in splits[name] if s in info.image_files]
    if not stems:
        raise UnetkitError(f"{info.root}: split {name!r} has no image/mask pairs")
    return stems


def choose_stems(
    info, split: str = "auto", trained: dict[str, list[str]] | None = None
) -> tuple[list[str], str]:
    """The stems ``evaluate`` scores, and a sentence saying which they are.

    ``trained`` is the train / val split recorded in the model (None when it records none).
    Rule for ``auto``: a model that was trained on images of this folder is scored on the
    validation images it recorded (refused when it held none out); a folder that shares no
    image with its training set is scored whole; without a recorded split, the folder's own
    validation split (``dataset.json``, VOC's ImageSets) or else every image. ``all`` scores
    every image and says how many were training images; other names select the folder's split.

    Raises:
        UnetkitError: an unknown split name, or nothing held out to score.
    """
    train = set((trained or {}).get("train") or [])
    seen = [s for s in info.stems if s in train]
    if split == "all":
        note = f"; {len(seen)} of them were used in training" if seen else ""
        return list(info.stems), f"all {len(info.stems)} images{note}"
    if split == "auto" and trained is not None:
        if not seen:
            return list(info.stems), (
                f"all {len(info.stems)} images (none of them was used in training)"
            )
        val = [s for s in (trained.get("val") or []) if s in info.image_files]
        if not val:
            bands = (
                "; it validated on a held-out band of each image (fewer than 40 images), "
                "which evaluate does not score: score images it never saw"
                if trained.get("val_regions")
                else ""
            )
            raise UnetkitError(
                f"{info.root}: the model was trained on {len(seen)} of these images and held "
                f"none of the others out for validation: nothing held out to score{bands} "
                "(--split all scores the training images anyway)"
            )
        return val, f"the {len(val)} validation images recorded in the checkpoint"
    stems = select_stems(info, split)
    if split == "auto" and stems == list(info.stems):
        return stems, (
            f"all {len(stems)} images (the model records no training split; some may have "
            "been training images)"
        )
    return (
        stems,
        f"the {len(stems)} images of the folder's {('val' if split == 'auto' else split)!r} split",
    )


def score_predictor(
    predictor,
    info,
    stems: list[str],
    *,
    rand_error: bool = False,
    objects: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict], np.ndarray]:
    """Predict the images ``stems`` of a dataset folder and score them (``score_pairs``).

    Args:
        predictor: a ``Predictor``.
        info: the folder's ``DatasetInfo`` (``describe_dataset``).
        stems: the images to score.
        rand_error, objects: as for :func:`score_pairs`.
        progress: a progress bar over images.

    Returns:
        ``score_pairs``'s ``(metrics, per-image rows, confusion)``, the ``objects`` metrics
        saying what the true and predicted objects are.

    Raises:
        UnetkitError: as :func:`evaluate_model`.
    """
    names = predictor.classes
    channels = predictor.info.preprocessing.channels
    between = predictor.between_class
    if between is not None and not objects:
        raise UnetkitError("--objects-between needs the object metrics (drop --no-objects)")

    def pairs() -> Iterator[tuple]:
        for stem in progress_bar(stems, desc="evaluate", unit="img", disable=not progress):
            gt = info.read_mask(stem)  # 0/255 mapped; ids > 0 for instance-only folders
            _check_range(info.mask_files[stem], gt, len(names), info.ignore_index)
            true_ids = info.read_instances(stem) if stem in info.instance_files else None
            if true_ids is None and between is not None:  # cells: what the class separates
                true_ids = regions_of(gt, between, info.ignore_index)
            if true_ids is not None and true_ids.shape != gt.shape:
                raise UnetkitError(
                    f"{info.instance_files[stem]}: instances are {true_ids.shape} but the mask "
                    f"is {gt.shape}"
                )
            image = read_image(info.image_files[stem], channels=channels)
            if objects:
                pred, pred_ids = predictor.predict_objects(image)
            else:
                pred, pred_ids = predictor.predict_mask(image), None
            yield info.image_files[stem].name, pred, gt, pred_ids, true_ids

    metrics, rows, matrix = score_pairs(
        pairs(), names, info.ignore_index, rand_error, objects, regions=between is not None
    )
    if objects:
        metrics["objects"].update(
            truth="instances/" if info.instance_files
            else "connected components of the masks" if between is None
            else f"regions between class {names[between]} (connected components)",
            predicted=(
                "star-convex polygons (rays instance model)" if predictor.rays
                else "watershed (instance model)"
            ) if predictor.instance
            else "connected components of the predicted mask" if between is None
            else f"regions between class {names[between]} (seeded watershed)",
        )  # fmt: skip
    return metrics, rows, matrix


def evaluate_model(
    model: str | os.PathLike,
    dataset_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "auto",
    config: PredictConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    rand_error: bool = False,
    objects: bool = True,
) -> dict[str, Any]:
    """Predict a dataset's images with a model and score them against its masks (and its
    objects: see the module docstring).

    Args:
        model: a checkpoint or an exported ONNX file.
        dataset_root: a dataset folder (any layout ``describe_dataset`` accepts).
        out_dir: the report folder.
        split: ``auto`` (the images the model did not train on, see :func:`choose_stems`),
            ``all``, or a split name of the folder.
        config: prediction settings (strategy, tile, TTA, threshold, device).
        device: ``auto``, ``cpu``, ``cuda``...; None = ``config.device``.
        progress: a progress bar over images.
        rand_error: also compute the adapted Rand error (two-class membrane models).
        objects: also the object metrics.

    Returns:
        The metrics (as in ``metrics.json``).

    Raises:
        UnetkitError: unreadable model or dataset, a class count that differs, or
            ``rand_error`` for a model without exactly two classes.
    """
    from ..data.layout import describe_dataset
    from .predict import Predictor

    predictor = Predictor.load(model, config, device)
    info = describe_dataset(dataset_root)
    names = predictor.classes
    if len(info.classes) != len(names):
        raise UnetkitError(
            f"{dataset_root}: dataset has {len(info.classes)} classes {info.classes}, the model "
            f"{len(names)} {names}"
        )
    if list(info.classes) != list(names):
        log.warning("class names differ: dataset %s, model %s", info.classes, names)
    stems, scored = choose_stems(info, split, predictor.info.split)
    log.info("evaluate: scoring %s", scored)
    metrics, rows, matrix = score_predictor(
        predictor, info, stems, rand_error=rand_error, objects=objects, progress=progress
    )
    metrics.update(
        model=str(model), dataset=str(dataset_root), split=split, scored=scored, stems=stems
    )
    write_report(out_dir, metrics, rows, matrix, names)
    return metrics


def _masks_by_stem(folder: Path, skip_outputs: bool) -> dict[str, Path]:
    if not folder.is_dir():
        raise UnetkitError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_SUFFIXES)
    if skip_outputs:  # a `unetkit predict` folder also holds colour and overlay images
        files = [p for p in files if not p.stem.endswith(_NOT_MASKS)]
    return {p.stem: p for p in files}


def evaluate_dirs(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    ignore_index: int = 255,
    rand_error: bool = False,
) -> dict[str, Any]:
    """Score a folder of predicted masks against a folder of true masks, paired by stem.

    Unless more than two classes are given, 0/255 masks are mapped to classes 0/1: decided
    from all the ground-truth masks, and separately from all the predictions
    (:func:`~unetkit.data.layout.decide_binary_255`; each decision logged).

    Args:
        pred_dir: class-index masks (e.g. a ``unetkit predict`` output folder).
        gt_dir: class-index masks with the same stems.
        out_dir: the report folder.
        num_classes: K; default ``len(class_names)`` or the largest value found + 1 (after the
            0/255 mapping).
        class_names: names for the report (default ``"0"``, ``"1"``, ...).
        ignore_index: ground-truth value excluded everywhere.
        rand_error: also compute the adapted Rand error (K = 2, membrane = class 1).

    Returns:
        The metrics (as in ``metrics.json``).

    Raises:
        UnetkitError: missing folders, no pairs, sizes that differ, values >= K, masks that mix
            0/1 and 0/255, ``rand_error`` with K != 2.
    """
    preds = _masks_by_stem(Path(pred_dir), skip_outputs=True)
    gts = _masks_by_stem(Path(gt_dir), skip_outputs=False)
    stems = [s for s in gts if s in preds]
    missing = [s for s in gts if s not in preds]
    if missing:
        log.warning("%d ground-truth masks have no prediction: %s", len(missing), missing[:10])
    if not stems:
        raise UnetkitError(f"{pred_dir} and {gt_dir}: no masks with the same name")
    if class_names is not None and num_classes is not None and num_classes != len(class_names):
        raise UnetkitError(f"{num_classes} classes but {len(class_names)} class names")
    k = len(class_names) if class_names is not None else (num_classes or None)
    map_gt = map_pred = False
    if k is None or k == 2:  # with more classes 255 is the ignore index: nothing to decide
        gt_values = all_mask_values([gts[s] for s in stems])
        pred_values = all_mask_values([preds[s] for s in stems])
        map_gt = _decide("ground truth", gt_values)
        map_pred = _decide("predictions", pred_values)
        if k is None:  # a predicted ignore value is reported by _check_range, not a class
            found = _mapped(gt_values, map_gt) | _mapped(pred_values, map_pred)
            k = max(found - {ignore_index}, default=0) + 1
    if class_names is None:
        class_names = [str(i) for i in range(max(k, 1))]

    pred_folder = Path(pred_dir)

    def pairs() -> Iterator[tuple]:
        for stem in stems:
            pred, gt = read_mask(preds[stem]), read_mask(gts[stem])
            pred = map_binary_255(pred) if map_pred else pred
            gt = map_binary_255(gt) if map_gt else gt
            _check_range(preds[stem], pred, len(class_names), None)
            _check_range(gts[stem], gt, len(class_names), ignore_index)
            found = [pred_folder / f"{stem}_instances{s}" for s in (".png", ".tif")]
            found = [p for p in found if p.is_file()]
            yield stem, pred, gt, read_instances(found[0]) if found else None, None

    metrics, rows, matrix = score_pairs(pairs(), class_names, ignore_index, rand_error)
    metrics.update(predictions=str(pred_dir), ground_truth=str(gt_dir))
    write_report(out_dir, metrics, rows, matrix, class_names)
    return metrics


def _decide(what: str, values: dict[Path, frozenset[int]]) -> bool:
    """The 0/255 decision for one folder of masks, logged in one line."""
    binary = decide_binary_255(values)
    if binary:
        log.info("%s: masks are 0/255: mapped to classes 0/1 (%d masks checked)", what, len(values))
    else:
        found = sorted(frozenset().union(*values.values()))
        log.info("%s: masks are class indices: values %s (%d masks checked)", what, found[:20],
                 len(values))  # fmt: skip
    return binary


def _mapped(values: dict[Path, frozenset[int]], binary: bool) -> set[int]:
    """All the values of a folder, after the 0/255 mapping when it applies."""
    found = set(frozenset().union(*values.values()))
    return {1 if v == 255 else v for v in found} if binary else found


def _check_range(path: Path, mask: np.ndarray, k: int, ignore_index: int | None) -> None:
    values = mask[mask != ignore_index] if ignore_index is not None else mask
    if values.size and (values.min() < 0 or values.max() >= k):
        raise UnetkitError(
            f"{path}: mask values {int(values.min())}..{int(values.max())} outside 0..{k - 1}"
            + (f" (and ignore {ignore_index})" if ignore_index is not None else "")
        )
