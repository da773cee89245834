"""Check a dataset folder and report every problem at once, each with files and values."""

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
from .layout import CLASS_FILES, LAYOUTS, find_layout, pair_files, read_class_file

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
    # 0/255 is a binary mask unless the folder declares more than 2 classes (255 = ignore then)
    binary = values <= {0, 255} and 255 in values and not strict
    binary = binary and (classes is None or len(classes) == 2)
    if binary:
        f.append(Finding("warning", [name], "0/255 mask: use the binary mapping 255 -> 1"))
    allowed = set(range(len(classes))) | {ignore} if classes is not None else None
    if allowed is not None and not binary and values - allowed:
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


def _check_pair(
    image_path: Path, mask_path: Path, classes: list[str] | None, ignore: int, strict: bool
) -> tuple[list[Finding], int | None]:
    """Findings of one pair and the image's channel count (None when unreadable)."""
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
    try:
        mask = read_mask(mask_path)
    except UnetkitError as exc:
        findings.append(Finding("error", [mask_path.name], _without_path(exc, mask_path)))
        return findings, None
    if image is None:
        return findings, None
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
    return [*findings, *mask_findings], image.shape[2]


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


def verify(root: str | os.PathLike, mask_suffix: str | None = None) -> list[Finding]:
    """Check a dataset folder (prepare output, VOC, imgs/ + masks/, images/ + masks/).

    Args:
        root: the folder.
        mask_suffix: mask name suffix for ``imgs/`` + ``masks/`` (guessed when None).

    Returns:
        Findings, errors first; an empty list for clean data.

    Raises:
        UnetkitError: the folder is missing or its layout is not recognised.
    """
    root = Path(root)
    layout, suffix = find_layout(root, mask_suffix)
    image_dir, mask_dir = (root / d for d in LAYOUTS[layout])
    pairs, lonely_images, lonely_masks = pair_files(image_dir, mask_dir, suffix)
    classes, ignore, findings = _class_list(root, layout)
    strict = layout == "unetkit"  # prepare output: 255 is always the ignore index
    if lonely_images:
        findings.append(Finding("error", [p.name for p in lonely_images], "image without a mask"))
    if lonely_masks:
        findings.append(Finding("error", [p.name for p in lonely_masks], "mask without an image"))
    if not pairs:
        findings.append(Finding("error", [str(root)], "no image/mask pairs"))
    channels: dict[int, list[str]] = defaultdict(list)
    for image_path, mask_path in pairs.values():
        pair_findings, c = _check_pair(image_path, mask_path, classes, ignore, strict)
        findings.extend(pair_findings)
        if c is not None:
            channels[c].append(image_path.name)
    findings.extend(_channel_mix(channels))
    return _merge(findings)


def _merge(findings: list[Finding]) -> list[Finding]:
    """One finding per (level, message) with all its files; errors first."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in findings:
        grouped[(f.level, f.message)].extend(f.files)
    merged = [Finding(level, files, msg) for (level, msg), files in grouped.items()]
    return sorted(merged, key=lambda f: (f.level != "error",))


def format_findings(findings: list[Finding], root: str | os.PathLike = "") -> str:
    """Human-readable report: one line per finding, then a summary line."""
    lines = [f"{f.level}: {_names(f.files)}: {f.message}" for f in findings]
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    where = f" in {root}" if root else ""
    lines.append(f"{errors} error(s), {warnings} warning(s){where}")
    return "\n".join(lines)
