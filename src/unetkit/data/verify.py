"""Check a dataset folder and report every problem at once, each with files and values.

Instance label images (``instances/`` beside the masks, or alone beside ``images/``) are
checked against their images and masks; :func:`check_dataset` counts their objects too.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnetkitError
from .imageio import read_image, read_mask
from .instances import read_instances
from .layout import CLASS_FILES, INSTANCES_ONLY, LAYOUTS, find_layout, read_class_file
from .pairing import pair_files

log = logging.getLogger(__name__)

MAX_LISTED = 5


@dataclass(frozen=True)
class Finding:
    """One problem: ``level`` is ``error`` or ``warning``; ``files`` are the files concerned."""

    level: str
    files: list[str]
    message: str


def _names(paths: list[Path] | list[str]) -> str:
    names = [Path(p).name for p in paths]
    more = f" (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _class_list(root: Path, layout: str) -> tuple[list[str] | None, int, list[Finding]]:
    """Classes and ignore index declared by the folder (None when it declares none)."""
    findings: list[Finding] = []
    classes, ignore = None, 255
    if layout == "unetkit":
        try:
            meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            return None, ignore, [Finding("error", ["dataset.json"], f"unreadable ({exc})")]
        classes, ignore = meta.get("classes"), int(meta.get("ignore_index", 255))
    class_file = next((root / n for n in CLASS_FILES if (root / n).is_file()), None)
    if class_file is not None:
        listed = read_class_file(class_file)
        if classes is not None and listed != classes:
            findings.append(
                Finding(
                    "error",
                    [class_file.name, "dataset.json"],
                    f"class lists differ: {listed} vs {classes}",
                )  # fmt: skip
            )
        classes = classes or listed
    return classes, ignore, findings


def _antialiased(mask: np.ndarray) -> list[int]:
    """Values that occur (almost) only between two different neighbouring values."""
    padded = np.pad(mask, 1, mode="edge")
    shifts = [padded[1:-1, :-2], padded[1:-1, 2:], padded[:-2, 1:-1], padded[2:, 1:-1]]
    low, high = np.minimum.reduce(shifts), np.maximum.reduce(shifts)
    between = (low < mask) & (mask < high)
    values, counts = np.unique(mask, return_counts=True)
    inter = np.unique(mask[between], return_counts=True)
    share = dict(zip(inter[0].tolist(), inter[1].tolist()))
    return [int(v) for v, n in zip(values, counts) if share.get(int(v), 0) >= 0.5 * n]


def _check_mask(
    mask_path: Path, mask: np.ndarray, classes: list[str] | None, ignore: int, strict: bool
) -> list[Finding]:
    f, name = [], mask_path.name
    values = set(np.unique(mask).tolist())
    binary = _is_binary(values, classes, strict)
    if binary:
        f.append(Finding("warning", [name], "0/255 mask: use the binary mapping 255 -> 1"))
    allowed = set(range(len(classes))) | {ignore} if classes is not None else None
    if allowed is not None and not binary and values - allowed:
        assert classes is not None  # allowed is set only with classes
        bad = sorted(values - allowed)
        f.append(
            Finding(
                "error",
                [name],
                f"values {bad[:8]} outside the class list "
                f"0..{len(classes) - 1} (+ ignore {ignore})",
            )  # fmt: skip
        )
    if len(values) > 2:
        smooth = _antialiased(mask)
        if smooth and (allowed is None or set(smooth) - allowed):
            f.append(
                Finding(
                    "error",
                    [name],
                    f"anti-aliased edges: values {smooth[:8]} occur only "
                    "between regions (resized or drawn with smoothing?)",
                )  # fmt: skip
            )
    if values == {0}:
        f.append(Finding("warning", [name], "mask is all background"))
    return f


def _without_path(exc: UnetkitError, path: Path) -> str:
    """The reason alone: the finding names the file already."""
    return str(exc).removeprefix(f"{path}: ")


def _channel_mix(channels: dict[int, list[str]]) -> list[Finding]:
    if len(channels) < 2:
        return []
    counts = ", ".join(f"{len(v)} with {c}" for c, v in sorted(channels.items()))
    level = "warning" if set(channels) <= {1, 3} else "error"
    hint = " (grey and RGB are converted when loading)" if level == "warning" else ""
    minority = min(channels.values(), key=len)
    return [Finding(level, minority, f"channel counts differ: {counts}{hint}")]


def _is_binary(values: set[int], classes: list[str] | None, strict: bool) -> bool:
    """0/255 is a binary mask unless the folder declares more than 2 classes (255 = ignore
    then) or is a prepare output."""
    binary = values <= {0, 255} and 255 in values and not strict
    return binary and (classes is None or len(classes) == 2)


def _read_checked_image(image_path: Path) -> tuple[np.ndarray | None, list[Finding]]:
    """The image (None when unreadable) and its findings (unreadable, NaN pixels)."""
    # read_image / read_mask refuse, in one line naming the file, what cannot be used: corrupt,
    # truncated or empty files, decompression bombs, several frames, NaN pixels, JPEG masks
    findings = []
    try:
        image = read_image(image_path, finite=False)  # NaN pixels are counted below
    except UnetkitError as exc:
        findings.append(Finding("error", [image_path.name], _without_path(exc, image_path)))
        image = None
    if image is not None and np.issubdtype(image.dtype, np.floating):
        bad = int((~np.isfinite(image)).sum())
        if bad:
            findings.append(Finding("error", [image_path.name], f"{bad} NaN/infinite pixel values"))
    return image, findings


@dataclass
class _Pair:
    """What checking one image / mask pair found, and what the instance checks need."""

    findings: list[Finding]
    channels: int | None = None  # None when the image is unreadable
    image_size: tuple[int, int] | None = None
    mask: np.ndarray | None = None


def _check_pair(
    image_path: Path, mask_path: Path, classes: list[str] | None, ignore: int, strict: bool
) -> _Pair:
    """Findings of one pair, the image's channel count and size, and the mask."""
    image, findings = _read_checked_image(image_path)
    size = None if image is None else (image.shape[0], image.shape[1])
    try:
        mask = read_mask(mask_path)
    except UnetkitError as exc:
        findings.append(Finding("error", [mask_path.name], _without_path(exc, mask_path)))
        return _Pair(findings, image_size=size)
    if image is None:
        return _Pair(findings)
    if mask.shape != image.shape[:2]:
        findings.append(
            Finding(
                "error",
                [image_path.name, mask_path.name],
                f"size mismatch: image {image.shape[0]}x{image.shape[1]}, "
                f"mask {mask.shape[0]}x{mask.shape[1]} (HxW)",
            )  # fmt: skip
        )
    mask_findings = _check_mask(mask_path, mask, classes, ignore, strict)
    return _Pair([*findings, *mask_findings], image.shape[2], size, mask)


def _id_list(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:MAX_LISTED])
    return shown + (f" (+{len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else "")


def _object_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct ids other than 0, sorted."""
    if ids.size and int(ids.max()) <= 1 << 22:
        present = np.flatnonzero(np.bincount(ids.ravel()))
    else:
        present = np.unique(ids)
    return present[present > 0]


def _read_checked_instances(
    path: Path, image_path: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray | None, list[Finding]]:
    """The ids (None when unusable) and the findings: unreadable, negative or non-integer
    ids (:func:`~unetkit.data.instances.read_instances`), a size other than the image's."""
    try:
        ids = read_instances(path)
    except UnetkitError as exc:
        return None, [Finding("error", [path.name], _without_path(exc, path))]
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


def _check_objects(
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
    binary = _is_binary(set(np.unique(mask).tolist()), classes, strict)
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


def _instance_folder(
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


@dataclass
class VerifyReport:
    """What :func:`check_dataset` found.

    Attributes:
        findings: problems, errors first (:func:`verify`'s list).
        n_pairs: image / mask pairs (image / instance pairs without ``masks/``).
        n_instance_images: readable instance images checked.
        n_objects: objects in them (distinct ids other than 0, summed over the images).
    """

    findings: list[Finding]
    n_pairs: int = 0
    n_instance_images: int = 0
    n_objects: int = 0

    def summary(self) -> str:
        """``"N object(s) in M instance image(s)"``, or ``""`` without instance images."""
        if not self.n_instance_images:
            return ""
        return f"{self.n_objects} object(s) in {self.n_instance_images} instance image(s)"


def verify(root: str | os.PathLike, mask_suffix: str | None = None) -> list[Finding]:
    """Check a dataset folder (prepare output, VOC, imgs/ + masks/, images/ + masks/,
    images/ + instances/); :func:`check_dataset` gives the object count too.

    Args:
        root: the folder.
        mask_suffix: mask name suffix for ``imgs/`` + ``masks/`` (guessed when None).

    Returns:
        Findings, errors first; an empty list for clean data.

    Raises:
        UnetkitError: the folder is missing or its layout is not recognised.
    """
    return check_dataset(root, mask_suffix).findings


def check_dataset(root: str | os.PathLike, mask_suffix: str | None = None) -> VerifyReport:
    """Check a dataset folder and count its objects.

    Pairs: readable image and mask, equal sizes, mask values in the class list, no
    anti-aliased edges, channel counts. With ``instances/`` (beside ``masks/``, or alone):
    every instance image readable with non-negative integer ids and the image's size; no
    object on background or ignore pixels of the mask, none spanning two classes; images
    without an instance file when others have one, instance files without an image.

    Args:
        root: the folder.
        mask_suffix: mask name suffix for ``imgs/`` + ``masks/`` (guessed when None).

    Returns:
        A :class:`VerifyReport`.

    Raises:
        UnetkitError: the folder is missing or its layout is not recognised.
    """
    root = Path(root)
    layout, suffix = find_layout(root, mask_suffix)
    image_dir, mask_dir = (root / d for d in LAYOUTS[layout])
    pairs, lonely_images, lonely_masks = pair_files(image_dir, mask_dir, suffix)
    classes, ignore, findings = _class_list(root, layout)
    if layout == INSTANCES_ONLY:
        report = _check_instances_only(root, pairs, lonely_images, lonely_masks, classes)
        report.findings = _merge([*findings, *report.findings])
        return report
    strict = layout == "unetkit"  # prepare output: 255 is always the ignore index
    if lonely_images:
        findings.append(Finding("error", [p.name for p in lonely_images], "image without a mask"))
    if lonely_masks:
        findings.append(Finding("error", [p.name for p in lonely_masks], "mask without an image"))
    if not pairs:
        findings.append(Finding("error", [str(root)], "no image/mask pairs"))
    instance_files, instance_findings = _instance_folder(root, image_dir, pairs)
    findings.extend(instance_findings)
    report = VerifyReport([], n_pairs=len(pairs))
    channels: dict[int, list[str]] = defaultdict(list)
    for stem, (image_path, mask_path) in pairs.items():
        pair = _check_pair(image_path, mask_path, classes, ignore, strict)
        findings.extend(pair.findings)
        if pair.channels is not None:
            channels[pair.channels].append(image_path.name)
        path = instance_files.get(stem)
        if path is None:
            continue
        ids, found = _read_checked_instances(path, image_path, pair.image_size)
        findings.extend(found)
        if ids is not None:
            report.n_instance_images += 1
            report.n_objects += len(_object_ids(ids))
            found = _check_objects(path, ids, mask_path, pair.mask, classes, ignore, strict)
            findings.extend(found)
    findings.extend(_channel_mix(channels))
    report.findings = _merge(findings)
    _log_summary(root, report)
    return report


def _check_instances_only(
    root: Path,
    pairs: dict[str, tuple[Path, Path]],
    lonely_images: list[Path],
    lonely_instances: list[Path],
    classes: list[str] | None,
) -> VerifyReport:
    """``images/`` + ``instances/`` without ``masks/``: one class of objects."""
    findings = []
    if classes is not None and len(classes) != 2:
        class_file = next(n for n in CLASS_FILES if (root / n).is_file())
        message = (
            f"{len(classes)} class names, but images/ + instances/ without masks/ has 2 "
            "(background and the objects' class)"
        )
        findings.append(Finding("error", [class_file], message))
    if lonely_images:
        names = [p.name for p in lonely_images]
        findings.append(Finding("error", names, "image without an instance file"))
    if lonely_instances:
        names = [p.name for p in lonely_instances]
        findings.append(Finding("error", names, "instance file without an image"))
    if not pairs:
        findings.append(Finding("error", [str(root)], "no image/instance pairs"))
    report = VerifyReport([], n_pairs=len(pairs))
    channels: dict[int, list[str]] = defaultdict(list)
    for image_path, path in pairs.values():
        image, found = _read_checked_image(image_path)
        findings.extend(found)
        size = None if image is None else (image.shape[0], image.shape[1])
        ids, found = _read_checked_instances(path, image_path, size)
        findings.extend(found)
        if image is not None:
            channels[image.shape[2]].append(image_path.name)
        if ids is not None:
            report.n_instance_images += 1
            report.n_objects += len(_object_ids(ids))
            if not ids.any():
                findings.append(Finding("warning", [path.name], "no objects (all background)"))
    findings.extend(_channel_mix(channels))
    report.findings = findings
    _log_summary(root, report)
    return report


def _log_summary(root: Path, report: VerifyReport) -> None:
    if report.n_instance_images:
        log.info("%s: %s", root, report.summary())


def _merge(findings: list[Finding]) -> list[Finding]:
    """One finding per (level, message) with all its files; errors first."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in findings:
        grouped[(f.level, f.message)].extend(f.files)
    merged = [Finding(level, files, msg) for (level, msg), files in grouped.items()]
    return sorted(merged, key=lambda f: (f.level != "error",))


def format_findings(
    findings: list[Finding], root: str | os.PathLike = "", report: VerifyReport | None = None
) -> str:
    """Human-readable report: one line per finding, then a summary line.

    Args:
        findings: what :func:`verify` returned.
        root: the folder, named in the summary.
        report: :func:`check_dataset`'s report, for the object count line (``N object(s) in
            M instance image(s)``) before the summary.
    """
    lines = [f"{f.level}: {_names(f.files)}: {f.message}" for f in findings]
    if report is not None and report.summary():
        lines.append(report.summary())
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    where = f" in {root}" if root else ""
    lines.append(f"{errors} error(s), {warnings} warning(s){where}")
    return "\n".join(lines)
