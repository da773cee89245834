"""Where a foreground mask's errors lie, against instance labels (``dsb.py --where-missing``).

The missing foreground (false negatives) of each image is split by the true object it
belongs to, and the extra foreground (false positives) by the predicted component:

* missing: **rim**, pixels within ``rim`` px of the edge of a true object that was found
  (at least half of it predicted): objects predicted too small; **inner**, the rest of the
  found objects' missing pixels (holes); **missed**, every missing pixel of a true object
  predicted less than half: whole objects lost (dim or small nuclei);
* extra: **rim**, pixels within ``rim`` px outside the true foreground in a predicted
  component that is mostly true foreground: objects predicted too large; **other**, farther
  out in such components (bridges, blobs attached to an object); **spurious**, pixels of a
  predicted component that is mostly not foreground: objects that are not there (or
  nuclei the annotators missed).

Every share is of the true foreground pixels, so that missing minus extra is the bias of the
predicted area (a foreground ratio of 0.9 is 10 % more missing than extra). The objects'
contrast (the mean of the object minus the median of the background, of the grey image scaled
by its own 1 / 99.8 % percentiles) tells dim missed nuclei from bright ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

FOUND = 0.5  # a true object is found when this share of it is predicted


def object_edges(instances: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of an object with a 4-neighbour of another label or background
    (the image border is not an edge)."""
    edge = np.zeros(instances.shape, bool)
    for a, b in ((np.s_[1:, :], np.s_[:-1, :]), (np.s_[:, 1:], np.s_[:, :-1])):
        differ = instances[a] != instances[b]
        edge[a] |= differ
        edge[b] |= differ
    return edge & (instances > 0)


def image_errors(
    pred: np.ndarray, instances: np.ndarray, image: np.ndarray, rim: int = 2
) -> dict[str, float | list[float]]:
    """Pixel counts of the error kinds of one image (see the module), and per-object contrasts.

    Args:
        pred: (H, W) bool, the predicted foreground.
        instances: (H, W) int, 0 background, 1..N true objects.
        image: (H, W) or (H, W, C) image, for the objects' contrast.
        rim: width in px of an object's rim.
    """
    import cv2

    gt = instances > 0
    fn, fp = gt & ~pred, pred & ~gt
    ids = instances.ravel().astype(np.int64)
    n = int(ids.max()) + 1
    area = np.bincount(ids, minlength=n)
    hit = np.bincount(ids, weights=pred.ravel(), minlength=n)
    found = hit >= FOUND * np.maximum(area, 1)
    found[0] = False
    in_found = found[instances]
    to_edge = cv2.distanceTransform((~object_edges(instances)).astype(np.uint8), cv2.DIST_L2, 3)
    near_edge = to_edge < rim  # the edge ring (0) and the rim - 1 rings inside it
    _, comp = cv2.connectedComponents(pred.astype(np.uint8), connectivity=8)
    comp_area = np.bincount(comp.ravel())
    comp_true = np.bincount(comp.ravel(), weights=gt.ravel(), minlength=len(comp_area))
    spurious = comp_true < FOUND * np.maximum(comp_area, 1)
    spurious[0] = False
    in_spurious = spurious[comp]
    to_true = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 3)
    grey = image.mean(2) if image.ndim == 3 else image.astype(np.float64)
    lo, hi = np.percentile(grey, (1, 99.8))
    scaled = (grey - lo) / max(hi - lo, 1e-6)
    background = float(np.median(scaled[~gt])) if (~gt).any() else 0.0
    sums = np.bincount(ids, weights=scaled.ravel(), minlength=n)
    contrast = np.abs(sums / np.maximum(area, 1) - background)
    objects = np.flatnonzero(area > 0)
    objects = objects[objects > 0]
    return {
        "true_px": int(gt.sum()),
        "pred_px": int(pred.sum()),
        "fn_rim": int((fn & in_found & near_edge).sum()),
        "fn_inner": int((fn & in_found & ~near_edge).sum()),
        "fn_missed": int((fn & ~in_found).sum()),
        "fp_rim": int((fp & ~in_spurious & (to_true <= rim)).sum()),
        "fp_other": int((fp & ~in_spurious & (to_true > rim)).sum()),
        "fp_spurious": int((fp & in_spurious).sum()),
        "objects": int(objects.size),
        "missed": int((~found[objects]).sum()),
        "contrast_missed": [round(float(c), 4) for c in contrast[objects[~found[objects]]]],
        "contrast_found": [round(float(c), 4) for c in contrast[objects[found[objects]]]],
        "area_missed": [int(a) for a in area[objects[~found[objects]]]],
    }


COUNTS = ("true_px", "pred_px", "fn_rim", "fn_inner", "fn_missed", "fp_rim", "fp_other",
          "fp_spurious", "objects", "missed")  # fmt: skip
LISTS = ("contrast_missed", "contrast_found", "area_missed")


def by_group(rows: Iterable[tuple[str, dict]], group_of: dict[str, str]) -> dict[str, dict]:
    """Sums (and joined lists) of :func:`image_errors` rows ``(stem, row)`` per group and over
    ``all`` (a stem may come more than once: the runs of several seeds)."""
    out: dict[str, dict] = defaultdict(lambda: {**dict.fromkeys(COUNTS, 0), "images": 0,
                                                **{k: [] for k in LISTS}})  # fmt: skip
    for stem, row in rows:
        for key in (group_of[stem], "all"):
            out[key]["images"] += 1
            for k in COUNTS:
                out[key][k] += row[k]
            for k in LISTS:
                out[key][k] += row[k]
    return dict(out)


def _median(values: list[float]) -> str:
    return f"{np.median(values):.2f}" if values else "-"


def print_table(groups: dict[str, dict], title: str, rim: int) -> None:
    """One row per group: missing and extra foreground as % of the true foreground, split by
    kind; objects missed; median contrast of missed and found objects."""
    print(f"\n{title}: where the errors are (% of true foreground px; rim {rim} px)")
    print(f"{'group':<22}{'n':>3}{'ratio':>7} | {'missing':>8}{'rim':>6}{'inner':>6}"
          f"{'missed':>7} | {'extra':>6}{'rim':>6}{'other':>6}{'spur.':>6} | "
          f"{'objects missed':>15}{'contrast m/f':>14}")  # fmt: skip
    for name in [*sorted(k for k in groups if k != "all"), "all"]:
        g = groups[name]
        t = max(g["true_px"], 1)
        pct = {k: 100 * g[k] / t for k in COUNTS[2:8]}
        missing = pct["fn_rim"] + pct["fn_inner"] + pct["fn_missed"]
        extra = pct["fp_rim"] + pct["fp_other"] + pct["fp_spurious"]
        print(
            f"{name:<22}{g['images']:>3}{g['pred_px'] / t:>7.3f} | {missing:>8.1f}"
            f"{pct['fn_rim']:>6.1f}{pct['fn_inner']:>6.1f}{pct['fn_missed']:>7.1f} | "
            f"{extra:>6.1f}{pct['fp_rim']:>6.1f}{pct['fp_other']:>6.1f}"
            f"{pct['fp_spurious']:>6.1f} | {g['missed']:>6} / {g['objects']:<6}"
            f"{_median(g['contrast_missed']):>8} /{_median(g['contrast_found']):>5}"
        )
