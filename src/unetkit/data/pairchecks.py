"""Checks of one image / mask pair: both readable, equal sizes, mask values in the class list,
no anti-aliased edges; and the channel counts across the pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnetkitError
from .findings import Finding
from .imageio import read_image, read_mask


def read_checked_image(image_path: Path) -> tuple[np.ndarray | None, list[Finding]]:
    """The image (None when unreadable) and its findings (unreadable, NaN pixels)."""
    # read_image / read_mask refuse, in one line naming the file, what cannot be used: corrupt,
    # truncated or empty files, decompression bombs, several frames, NaN pixels, JPEG masks
    findings = []
    try:
        image = read_image(image_path, finite=False)  # NaN pixels are counted below
    except UnetkitError as exc:
        findings.append(Finding("error", [image_path.name], without_path(exc, image_path)))
        image = None
    if image is not None and np.issubdtype(image.dtype, np.floating):
        bad = int((~np.isfinite(image)).sum())
        if bad:
            findings.append(Finding("error", [image_path.name], f"{bad} NaN/infinite pixel values"))
    return image, findings


@dataclass
class PairCheck:
    """What checking one image / mask pair found, and what the instance checks need."""

    findings: list[Finding]
    channels: int | None = None  # None when the image is unreadable
    image_size: tuple[int, int] | None = None
    mask: np.ndarray | None = None


def check_pair(
    image_path: Path, mask_path: Path, classes: list[str] | None, ignore: int, strict: bool
) -> PairCheck:
    """Findings of one pair, the image's channel count and size, and the mask."""
    image, findings = read_checked_image(image_path)
    size = None if image is None else (image.shape[0], image.shape[1])
    try:
        mask = read_mask(mask_path)
    except UnetkitError as exc:
        findings.append(Finding("error", [mask_path.name], without_path(exc, mask_path)))
        return PairCheck(findings, image_size=size)
    if image is None:
        return PairCheck(findings)
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
    return PairCheck([*findings, *mask_findings], image.shape[2], size, mask)


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
    binary = is_binary_mask(values, classes, strict)
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


def is_binary_mask(values: set[int], classes: list[str] | None, strict: bool) -> bool:
    """0/255 is a binary mask unless the folder declares more than 2 classes (255 = ignore
    then) or is a prepare output."""
    binary = values <= {0, 255} and 255 in values and not strict
    return binary and (classes is None or len(classes) == 2)


def without_path(exc: UnetkitError, path: Path) -> str:
    """The reason alone: the finding names the file already."""
    return str(exc).removeprefix(f"{path}: ")


def channel_mix(channels: dict[int, list[str]]) -> list[Finding]:
    if len(channels) < 2:
        return []
    counts = ", ".join(f"{len(v)} with {c}" for c, v in sorted(channels.items()))
    level = "warning" if set(channels) <= {1, 3} else "error"
    hint = " (grey and RGB are converted when loading)" if level == "warning" else ""
    minority = min(channels.values(), key=len)
    return [Finding(level, minority, f"channel counts differ: {counts}{hint}")]
