"""Objects from star-convex polygons: greedy non-maximum suppression, then a label image.

The ``rays`` instance head predicts, at every pixel, an object probability and the lengths of
``n_rays`` rays to its object's edge (``unetkit.data.rays``). As in StarDist (Schmidt et al.
2018):

1. candidates: the pixels whose probability exceeds ``prob_thresh``, each the polygon through
   the ends of its rays, ranked by probability (ties in raster order, so the result never
   depends on how the maps were computed);
2. non-maximum suppression: walking down the ranking, a candidate is kept unless it overlaps
   a polygon kept before it by more than ``nms_thresh``, the overlap being the intersection's
   area over the smaller polygon's area (StarDist's measure);
3. the kept polygons are drawn, the lowest ranked first, so where two overlap the pixel goes
   to the more probable one.

Areas are the polygons' exact (shoelace) areas; an intersection is the number of pixel centres
inside both polygons, counted only over the two bounding boxes' overlap and only against kept
polygons whose boxes meet the candidate's (a grid of 32 px cells indexes them), and a count
stops as soon as it passes the threshold. A pixel is inside a polygon when it lies in the
triangle between the polygon's centre and the two ray ends on either side of its angle (looked
up in a table of pixel offsets rather than computed with ``atan2``). The loops are compiled
with numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..data.rays import check_rays, ray_angles

CELL = 32  # side of the grid cells that index kept polygons by their bounding boxes
MAX_REACH = 256  # offsets up to this look their ray up in a table; farther ones use atan2


@njit(cache=True, nogil=True)
def _inside(py, px, cy, cx, radii, sin, cos, wedges):
    """Whether pixel centre (py, px) lies in the star polygon of centre (cy, cx): in the
    triangle of the centre and the ends of the two rays on either side of its angle.

    ``wedges`` (2 M + 1, 2 M + 1): the ray before the angle of each offset (dy, dx) up to M
    (``_wedge_table``); farther offsets are measured with ``atan2``."""
    dy, dx = py - cy, px - cx
    if dy == 0 and dx == 0:
        return True
    n = radii.size
    reach = wedges.shape[0] // 2
    if abs(dy) <= reach and abs(dx) <= reach:
        k = wedges[dy + reach, dx + reach]
    else:
        angle = np.arctan2(dy, dx)
        if angle < 0:
            angle += 2 * np.pi
        k = min(int(angle * n / (2 * np.pi)), n - 1)
    k1 = k + 1 if k + 1 < n else 0
    ax, ay = radii[k] * cos[k], radii[k] * sin[k]
    bx, by = radii[k1] * cos[k1], radii[k1] * sin[k1]
    den = ax * by - ay * bx
    if den <= 0:
        return False
    # (dx, dy) = alpha a + beta b in the wedge; inside the triangle when alpha + beta <= 1
    return (dx * by - dy * bx) + (ax * dy - ay * dx) <= den


def _wedge_table(n_rays: int, reach: int) -> np.ndarray:
    """(2 reach + 1, 2 reach + 1) int64: the ray at or before the angle of each offset."""
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    angle = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    return np.minimum((angle * n_rays / (2 * np.pi)).astype(np.int64), n_rays - 1)


@njit(cache=True, nogil=True)
def _boxes(cy, cx, radii, sin, cos, height, width):
    """Each polygon's pixel bounding box (y0, y1, x0, x1, inclusive, clipped) and area."""
    n, r = radii.shape
    box = np.empty((n, 4), np.int64)
    area = np.empty(n)
    for i in range(n):
        top, bottom, left, right = float(cy[i]), float(cy[i]), float(cx[i]), float(cx[i])
        total = 0.0
        for k in range(r):
            vy = cy[i] + radii[i, k] * sin[k]
            vx = cx[i] + radii[i, k] * cos[k]
            top, bottom = min(top, vy), max(bottom, vy)
            left, right = min(left, vx), max(right, vx)
            total += radii[i, k] * radii[i, (k + 1) % r]
        box[i, 0] = max(0, int(np.ceil(top)))
        box[i, 1] = min(height - 1, int(np.floor(bottom)))
        box[i, 2] = max(0, int(np.ceil(left)))
        box[i, 3] = min(width - 1, int(np.floor(right)))
        area[i] = 0.5 * total * np.sin(2 * np.pi / r)
    return box, area


@njit(cache=True, nogil=True)
def _overlaps(i, j, limit, cy, cx, radii, sin, cos, wedges, box, masks, start):
    """True when more than ``limit`` pixel centres lie inside both candidate i and kept
    polygon j (whose pixels ``masks[start[j]:]`` hold, row by row over its box)."""
    count = 0
    width = box[j, 3] - box[j, 2] + 1
    for y in range(max(box[i, 0], box[j, 0]), min(box[i, 1], box[j, 1]) + 1):
        row = start[j] + (y - box[j, 0]) * width - box[j, 2]
        for x in range(max(box[i, 2], box[j, 2]), min(box[i, 3], box[j, 3]) + 1):
            if masks[row + x] and _inside(y, x, cy[i], cx[i], radii[i], sin, cos, wedges):
                count += 1
                if count > limit:
                    return True
    return False


@njit(cache=True, nogil=True)
def _suppress(cy, cx, radii, sin, cos, wedges, thresh, box, area, height, width):
    """Greedy NMS over candidates in rank order: which are kept."""
    n = radii.shape[0]
    kept = np.zeros(n, np.bool_)
    grid_w = (width + CELL - 1) // CELL
    head = np.full(((height + CELL - 1) // CELL) * grid_w, -1, np.int64)
    entry_id = np.empty(1024, np.int64)  # a linked list of kept polygons per grid cell
    entry_next = np.empty(1024, np.int64)
    used = 0
    masks = np.zeros(1 << 16, np.bool_)  # each kept polygon's pixels over its box
    start = np.zeros(n, np.int64)
    filled = 0
    seen = np.full(n, -1, np.int64)  # the candidate that last compared with each polygon
    for i in range(n):
        if area[i] <= 0 or box[i, 0] > box[i, 1] or box[i, 2] > box[i, 3]:
            continue
        keep = True
        for gy in range(box[i, 0] // CELL, box[i, 1] // CELL + 1):
            for gx in range(box[i, 2] // CELL, box[i, 3] // CELL + 1):
                e = head[gy * grid_w + gx]
                while e >= 0 and keep:
                    j = entry_id[e]
                    e = entry_next[e]
                    if seen[j] == i:
                        continue
                    seen[j] = i
                    if (box[j, 0] > box[i, 1] or box[i, 0] > box[j, 1]
                            or box[j, 2] > box[i, 3] or box[i, 2] > box[j, 3]):  # fmt: skip
                        continue
                    limit = thresh * min(area[i], area[j])
                    keep = not _overlaps(
                        i, j, limit, cy, cx, radii, sin, cos, wedges, box, masks, start
                    )
                if not keep:
                    break
            if not keep:
                break
        if not keep:
            continue
        kept[i] = True
        size = (box[i, 1] - box[i, 0] + 1) * (box[i, 3] - box[i, 2] + 1)
        while filled + size > masks.size:
            masks = np.concatenate((masks, np.zeros(masks.size, np.bool_)))
        start[i] = filled
        for y in range(box[i, 0], box[i, 1] + 1):
            for x in range(box[i, 2], box[i, 3] + 1):
                masks[filled] = _inside(y, x, cy[i], cx[i], radii[i], sin, cos, wedges)
                filled += 1
        for gy in range(box[i, 0] // CELL, box[i, 1] // CELL + 1):
            for gx in range(box[i, 2] // CELL, box[i, 3] // CELL + 1):
                if used == entry_id.size:
                    entry_id = np.concatenate((entry_id, np.empty(used, np.int64)))
                    entry_next = np.concatenate((entry_next, np.empty(used, np.int64)))
                entry_id[used] = i
                entry_next[used] = head[gy * grid_w + gx]
                head[gy * grid_w + gx] = used
                used += 1
    return kept


@njit(cache=True, nogil=True)
def _render(order, cy, cx, radii, sin, cos, wedges, box, height, width):
    """Polygons ``order`` drawn in that order (later ones win), ids 1.. in that order."""
    labels = np.zeros((height, width), np.int32)
    for rank in range(order.size):
        i = order[rank]
        for y in range(box[i, 0], box[i, 1] + 1):
            for x in range(box[i, 2], box[i, 3] + 1):
                if _inside(y, x, cy[i], cx[i], radii[i], sin, cos, wedges):
                    labels[y, x] = rank + 1
    return labels


@dataclass
class Candidates:
    """The polygons a rays head proposes, best first (``star_candidates``).

    Attributes:
        cy, cx: (N,) int64 centre pixels.
        radii: (N, R) float64 ray lengths (>= 0).
        score: (N,) float32 object probabilities, non-increasing.
        box: (N, 4) int64 pixel bounding boxes (y0, y1, x0, x1, inclusive, clipped).
        area: (N,) float64 polygon areas.
        shape: the image's (H, W).
    """

    cy: np.ndarray
    cx: np.ndarray
    radii: np.ndarray
    score: np.ndarray
    box: np.ndarray
    area: np.ndarray
    shape: tuple[int, int]

    def _geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_rays = self.radii.shape[1]
        angles = ray_angles(n_rays)
        reach = int(min(np.ceil(self.radii.max(initial=0.0)) + 1, MAX_REACH))
        return np.sin(angles), np.cos(angles), _wedge_table(n_rays, reach)


def star_candidates(
    prob: np.ndarray, rays: np.ndarray, prob_thresh: float, where: np.ndarray | None = None
) -> Candidates:
    """The pixels whose probability exceeds ``prob_thresh`` and their polygons, ranked by
    probability (ties in raster order).

    Args:
        prob: (H, W) object probability.
        rays: (n_rays, H, W) ray lengths in pixels (``unetkit.data.rays.ray_angles``).
        prob_thresh: the candidates' least probability (exclusive).
        where: (H, W) bool, the only pixels that may be candidates (None: all).
    """
    prob = np.asarray(prob, np.float32)
    rays = np.asarray(rays)
    if prob.ndim != 2 or rays.ndim != 3 or rays.shape[1:] != prob.shape:
        raise ValueError(f"prob (H, W) and rays (R, H, W) expected; got {prob.shape}, {rays.shape}")
    n_rays = rays.shape[0]
    check_rays(n_rays)
    height, width = prob.shape
    chosen = prob > prob_thresh
    if where is not None:
        chosen &= where
    flat = np.flatnonzero(chosen.ravel())
    flat = flat[np.argsort(-prob.ravel()[flat], kind="stable")]  # ties in raster order
    cy, cx = np.divmod(flat, width)
    radii = np.maximum(rays.reshape(n_rays, -1)[:, flat].T.astype(np.float64), 0.0)
    angles = ray_angles(n_rays)
    box, area = _boxes(cy, cx, radii, np.sin(angles), np.cos(angles), height, width)
    return Candidates(cy, cx, radii, prob.ravel()[flat], box, area, (height, width))


def suppress(candidates: Candidates, nms_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression: (N,) bool, the candidates kept.

    A candidate's fate depends only on those ranked above it, so the polygons kept among the
    candidates above a higher probability are these, restricted to them.
    """
    c = candidates
    if not c.score.size:
        return np.zeros(0, bool)
    sin, cos, wedges = c._geometry()
    return _suppress(c.cy, c.cx, c.radii, sin, cos, wedges, float(nms_thresh), c.box, c.area,
                     *c.shape)  # fmt: skip


def draw(candidates: Candidates, keep: np.ndarray) -> np.ndarray:
    """The ``keep`` polygons drawn the least probable first, so the best is on top: (H, W)
    int32 ids 1..N in order of increasing probability, 0 elsewhere."""
    c = candidates
    order = np.flatnonzero(keep)[::-1].copy()
    if not order.size:
        return np.zeros(c.shape, np.int32)
    sin, cos, wedges = c._geometry()
    return _render(order, c.cy, c.cx, c.radii, sin, cos, wedges, c.box, *c.shape)


def star_objects(
    prob: np.ndarray,
    rays: np.ndarray,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Object ids from a rays head's maps: candidates, non-maximum suppression, drawing.

    Args:
        prob: (H, W) object probability.
        rays: (n_rays, H, W) ray lengths in pixels (``unetkit.data.rays.ray_angles``).
        prob_thresh: candidates are the pixels whose probability exceeds this.
        nms_thresh: a candidate overlapping a kept polygon by more than this (intersection
            over the smaller area) is dropped.
        where: (H, W) bool, the only pixels that may be candidates (None: all).

    Returns:
        (H, W) int32 ids 1..N, N the number of kept polygons, the most probable N (a polygon
        that others cover entirely has no pixel left and its id is missing); 0 elsewhere.
    """
    candidates = star_candidates(prob, rays, prob_thresh, where)
    return draw(candidates, suppress(candidates, nms_thresh))
