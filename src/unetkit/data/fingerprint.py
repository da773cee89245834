"""The data fingerprint: what training knows about its images before the first step.

As nnU-Net plans from its dataset fingerprint, ``unetkit train`` measures its training images
once (they are decoded anyway, into the cache) and decides the intensity normalisation from it:

* per image and channel: size, mean, std, 1 / 99 percentiles (in [0, 1] units);
* pooled per channel: mean and std over every pixel of every image (images above ~4 M pixels
  by a fixed-stride subsample, weighted by their true size);
* class pixel shares, and per foreground class the connected objects (8-connectivity): count
  and area percentiles (10 / 50 / 90);
* ``exposure_spread``: the spread of the per-image means relative to the typical contrast
  within an image (``std over images of the mean / median over images of the std``, the
  largest over channels), and ``contrast_spread``: the coefficient of variation of the
  per-image stds.

**The normalisation rule** (:func:`choose_normalization`): where exposure varies from image to
image (``exposure_spread > 0.5`` or ``contrast_spread > 0.5``, as in microscopy mixing
fluorescence and brightfield, or any set with an uneven illumination) each image is scaled
by its own 1 / 99.8 % percentiles (``percentile``, CSBDeep's and StarDist's normalisation,
steady against a few very bright pixels); otherwise by the dataset's mean and std
(``dataset``).
Image-to-image tasks keep ``fixed`` (the targets are the images themselves).

The fingerprint is printed at the start of training, stored in every checkpoint
(``train_state["fingerprint"]``) and shown by ``unetkit info``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .normalize import channel_summary, subsample

SPREAD_LIMIT = 0.5


def compute_fingerprint(
    samples: Iterable[tuple[str, np.ndarray, np.ndarray | None]], num_classes: int
) -> dict[str, Any]:
    """Measure ``(stem, image (H, W, C), class mask (H, W) or None)`` samples.

    Returns:
        plain data (JSON-safe): ``images``, ``channels``, ``size_min`` / ``size_median`` /
        ``size_max`` (H, W), ``pooled`` {mean, std} per channel, ``exposure_spread``,
        ``contrast_spread``, ``class_share`` (when masks are given), ``objects`` per foreground
        class {count, area_p10, area_p50, area_p90}, ``per_image`` rows.
    """
    import cv2

    rows: list[dict[str, Any]] = []
    sums = sq = None
    pixels = 0
    counts = np.zeros(max(num_classes, 1), np.int64)
    areas: dict[int, list[int]] = {c: [] for c in range(1, num_classes)}
    for stem, image, mask in samples:
        image = image if image.ndim == 3 else image[:, :, None]
        sample = subsample(image).astype(np.float64)  # (N, C), the same pixels as the stats
        rows.append({"stem": stem, "height": image.shape[0], "width": image.shape[1],
                     **channel_summary(sample)})  # fmt: skip
        n = image.shape[0] * image.shape[1]  # each image weighs by its true pixel count
        s, q = sample.mean(0) * n, np.square(sample).mean(0) * n
        sums, sq = (s, q) if sums is None else (sums + s, sq + q)
        pixels += n
        if mask is not None and num_classes > 0:
            valid = mask[(mask >= 0) & (mask < num_classes)]
            counts += np.bincount(valid.ravel().astype(np.int64), minlength=num_classes)[
                : len(counts)
            ]
            for c in areas:
                binary = (mask == c).astype(np.uint8)
                if binary.any():
                    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
                    areas[c].extend(int(a) for a in stats[1:n, cv2.CC_STAT_AREA])
    if not rows:
        return {"images": 0}
    means = np.array([r["mean"] for r in rows])  # (N, C)
    stds = np.array([r["std"] for r in rows])
    assert sums is not None and sq is not None  # rows is not empty: the loop set them
    pooled_mean = sums / pixels
    pooled_std = np.sqrt(np.maximum(sq / pixels - pooled_mean**2, 0.0))
    typical = np.maximum(np.median(stds, 0), 1e-6)
    exposure = float(np.max(means.std(0) / typical))
    contrast = float(np.max(stds.std(0) / np.maximum(stds.mean(0), 1e-6)))
    sizes = np.array([(r["height"], r["width"]) for r in rows])
    out: dict[str, Any] = {
        "images": len(rows),
        "channels": int(means.shape[1]),
        "size_min": sizes.min(0).tolist(),
        "size_median": np.median(sizes, 0).astype(int).tolist(),
        "size_max": sizes.max(0).tolist(),
        "pooled": {
            "mean": [round(float(v), 5) for v in pooled_mean],
            "std": [round(float(v), 5) for v in pooled_std],
        },
        "exposure_spread": round(exposure, 4),
        "contrast_spread": round(contrast, 4),
    }
    if counts.sum():
        out["class_share"] = [round(float(v), 6) for v in counts / counts.sum()]
        out["objects"] = {
            str(c): _area_summary(a) for c, a in areas.items()
        }  # keys are strings in JSON
    out["per_image"] = rows
    return out


def _area_summary(areas: list[int]) -> dict[str, float]:
    if not areas:
        return {"count": 0}
    p10, p50, p90 = np.percentile(areas, (10, 50, 90))
    return {"count": len(areas), "area_p10": float(p10), "area_p50": float(p50),
            "area_p90": float(p90)}  # fmt: skip


def choose_normalization(fingerprint: dict[str, Any]) -> tuple[str, str]:
    """The ``normalize`` mode for a fingerprint, and the reason in words (the module's rule)."""
    exposure = fingerprint.get("exposure_spread", 0.0)
    contrast = fingerprint.get("contrast_spread", 0.0)
    if exposure > SPREAD_LIMIT or contrast > SPREAD_LIMIT:
        return "percentile", (
            f"exposure varies between images (spread of means {exposure:.2f}, of contrasts "
            f"{contrast:.2f} > {SPREAD_LIMIT}): each image scaled by its own 1 / 99.8 % "
            "percentiles"
        )
    return "dataset", (
        f"exposure is even across images (spreads {exposure:.2f} / {contrast:.2f} <= "
        f"{SPREAD_LIMIT}): standardised by the dataset's mean and std"
    )


def describe(fingerprint: dict[str, Any], class_names: list[str] | None = None) -> str:
    """A few lines for the start of training and ``unetkit info``."""
    if not fingerprint.get("images"):
        return "fingerprint: no images"
    fmt: Callable[[list[float]], str] = lambda v: "/".join(f"{x:.3f}" for x in v)  # noqa: E731
    lines = [
        f"fingerprint: {fingerprint['images']} images, {fingerprint['channels']} channel(s), "
        f"sizes {_hw(fingerprint['size_min'])} .. {_hw(fingerprint['size_max'])} "
        f"(median {_hw(fingerprint['size_median'])})",
        f"  intensity (0-1): pooled mean {fmt(fingerprint['pooled']['mean'])}, std "
        f"{fmt(fingerprint['pooled']['std'])}; exposure spread "
        f"{fingerprint['exposure_spread']:.2f}, contrast spread "
        f"{fingerprint['contrast_spread']:.2f}",
    ]
    share = fingerprint.get("class_share")
    if share:
        names = class_names or [str(i) for i in range(len(share))]
        lines.append(
            "  class share: " + ", ".join(f"{n} {100 * s:.2f} %" for n, s in zip(names, share))
        )
        for key, obj in (fingerprint.get("objects") or {}).items():
            name = names[int(key)] if int(key) < len(names) else key
            if obj.get("count"):
                lines.append(
                    f"  objects {name}: {obj['count']}, area p10/p50/p90 "
                    f"{obj['area_p10']:.0f}/{obj['area_p50']:.0f}/{obj['area_p90']:.0f} px"
                )
    return "\n".join(lines)


def _hw(size: list[int]) -> str:
    return f"{size[0]}x{size[1]}"
