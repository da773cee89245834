"""Check a dataset folder and report every problem at once, each with files and values.

Instance label images (``instances/`` beside the masks, or alone beside ``images/``) are
checked against their images and masks; :func:`check_dataset` counts their objects too.
This module walks the folder and combines; the checks are :mod:`unetkit.data.pairchecks` (an
image and its mask) and :mod:`unetkit.data.instancechecks` (instance label images), the
findings and the report :mod:`unetkit.data.findings`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from .findings import Finding, VerifyReport, listed, merge_findings
from .instancechecks import check_objects, instance_folder, object_ids, read_checked_instances
from .layout import CLASS_FILES, INSTANCES_ONLY, LAYOUTS, find_layout, read_class_file
from .pairchecks import channel_mix, check_pair, read_checked_image
from .pairing import pair_files

log = logging.getLogger(__name__)


def _names(paths: list[Path] | list[str]) -> str:
    return listed([Path(p).name for p in paths])


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
        A :class:`~unetkit.data.findings.VerifyReport`.

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
        report.findings = merge_findings([*findings, *report.findings])
        return report
    strict = layout == "unetkit"  # prepare output: 255 is always the ignore index
    if lonely_images:
        findings.append(Finding("error", [p.name for p in lonely_images], "image without a mask"))
    if lonely_masks:
        findings.append(Finding("error", [p.name for p in lonely_masks], "mask without an image"))
    if not pairs:
        findings.append(Finding("error", [str(root)], "no image/mask pairs"))
    instance_files, instance_findings = instance_folder(root, image_dir, pairs)
    findings.extend(instance_findings)
    report = VerifyReport([], n_pairs=len(pairs))
    channels: dict[int, list[str]] = defaultdict(list)
    for stem, (image_path, mask_path) in pairs.items():
        pair = check_pair(image_path, mask_path, classes, ignore, strict)
        findings.extend(pair.findings)
        if pair.channels is not None:
            channels[pair.channels].append(image_path.name)
        path = instance_files.get(stem)
        if path is None:
            continue
        ids, found = read_checked_instances(path, image_path, pair.image_size)
        findings.extend(found)
        if ids is not None:
            report.n_instance_images += 1
            report.n_objects += len(object_ids(ids))
            found = check_objects(path, ids, mask_path, pair.mask, classes, ignore, strict)
            findings.extend(found)
    findings.extend(channel_mix(channels))
    report.findings = merge_findings(findings)
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
        image, found = read_checked_image(image_path)
        findings.extend(found)
        size = None if image is None else (image.shape[0], image.shape[1])
        ids, found = read_checked_instances(path, image_path, size)
        findings.extend(found)
        if image is not None:
            channels[image.shape[2]].append(image_path.name)
        if ids is not None:
            report.n_instance_images += 1
            report.n_objects += len(object_ids(ids))
            if not ids.any():
                findings.append(Finding("warning", [path.name], "no objects (all background)"))
    findings.extend(channel_mix(channels))
    report.findings = findings
    _log_summary(root, report)
    return report


def _log_summary(root: Path, report: VerifyReport) -> None:
    if report.n_instance_images:
        log.info("%s: %s", root, report.summary())


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
