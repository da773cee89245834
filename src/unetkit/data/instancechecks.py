"""Checks of instance label images (``instances/``): readable ids of the image's size, objects
against the class mask, and the folder as a whole (an instance file for every image or none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnetkitError
from .findings import Finding, listed
from .instances import read_instances
from .pairchecks import is_binary_mask, without_path
from .pairing import pair_files


def _id_list(ids: np.ndarray) -> str:
    return listed([str(int(i)) for i in ids])


def object_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct ids other than 0, sorted."""
    if ids.size and int(ids.max()) <= 1 << 22:
        present = np.flatnonzero(np.bincount(ids.ravel()))
    else:
        present = np.unique(ids)
    return present[present > 0]


def read_checked_instances(
    path: Path, image_path: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray | None, list[Finding]]:
    """The ids (None when unusable) and the findings: unreadable, negative or non-integer
    ids (:func:`~unetkit.data.instances.read_instances`), a size other than the image's."""
    try:
        ids = read_instances(path)
    except UnetkitError as exc:
        return None, [Finding("error", [path.name], without_path(exc, path))]
    if image_size is not None and ids.shape != image_size:
        message = (
            f"size mismatch: image {image_size[0]}x{image_size[1]}, "
            f"instances {ids.shape[0]}x{ids.shape[1]} (HxW)"
        )
        return None, [Finding("error", [image_path.name, path.name], message)]
    return ids, []


def _classes_per_object(ids: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids of 1-D ``ids`` and how many distinct ``classes`` each covers."""
    if not ids.size:
        return ids, ids
    low, span = int(classes.min()), int(classes.max()) - int(classes.min()) + 1
    if span < 1 << 31:  # one int64 key per (id, class): a 1-D unique, much faster
        keys = np.unique((ids.astype(np.int64) << 31) | (classes.astype(np.int64) - low))
        return np.unique(keys >> 31, return_counts=True)
    pairs = np.unique(np.stack([ids.astype(np.int64), classes.astype(np.int64)], axis=1), axis=0)
    return np.unique(pairs[:, 0], return_counts=True)


def check_objects(
    path: Path,
    ids: np.ndarray,
    mask_path: Path,
    mask: np.ndarray | None,
    classes: list[str] | None,
    ignore: int,
    strict: bool,
) -> list[Finding]:
    """Objects against the class mask: on background / ignore pixels (255 is foreground in a
    0/255 binary mask), spanning several classes; object-class pixels of no object."""
    if mask is None or mask.shape != ids.shape:
        return []  # an unreadable or mis-sized mask is reported already
    binary = is_binary_mask(set(np.unique(mask).tolist()), classes, strict)
    not_objects = (mask == 0) if binary else (mask == 0) | (mask == ignore)
    findings, files = [], [path.name, mask_path.name]
    inside = ids > 0
    stray = inside & not_objects
    if stray.any():
        bad = np.unique(ids[stray])
        findings.append(
            Finding(
                "error",
                files,
                f"{int(stray.sum())} object pixel(s) on background or ignore pixels of the mask "
                f"({len(bad)} object(s): id {_id_list(bad)})",
            )  # fmt: skip
        )
    covered = inside & ~not_objects
    objects, n_classes = _classes_per_object(ids[covered], mask[covered])
    split = objects[n_classes > 1]
    if len(split):
        findings.append(
            Finding(
                "error",
                files,
                f"{len(split)} object(s) span several classes of the mask: id {_id_list(split)}",
            )  # fmt: skip
        )
    unowned = int((~inside & ~not_objects).sum())
    if unowned:
        findings.append(
            Finding("warning", files, f"{unowned} foreground mask pixel(s) belong to no object")
        )
    return findings


def instance_folder(
    root: Path, image_dir: Path, pairs: dict[str, tuple[Path, Path]]
) -> tuple[dict[str, Path], list[Finding]]:
    """The instance file of each paired stem (``root/instances/``), and the findings about the
    folder as a whole: images without one when others have one, files without an image."""
    folder = root / "instances"
    if not folder.is_dir():
        return {}, []
    with_image, _, orphans = pair_files(image_dir, folder)
    files = {s: p[1] for s, p in with_image.items() if s in pairs}
    findings = []
    missing = [pairs[s][0].name for s in pairs if s not in files]
    if files and missing:
        message = (
            f"image without an instance file ({len(files)} of {len(pairs)} images have one "
            "in instances/)"
        )
        findings.append(Finding("error", missing, message))
    if orphans:
        findings.append(
            Finding("error", [p.name for p in orphans], "instance file without an image")
        )
    if not files and not orphans:
        findings.append(Finding("warning", [folder.name], "no instance file named as an image"))
    return files, findings
