"""Objects from an instance model's probabilities: a seeded watershed (scikit-image).

``boundary`` head (``ObjectConfig.head``): the model's softmax has the data's K classes plus
``boundary`` (last channel; see ``unetkit.data.targets``). On the whole image's probabilities:

1. object pixels: ``1 - p(background) > fg_threshold``;
2. seeds: the 4-connected regions of object pixels whose interior probability (the sum over
   the object classes, boundary excluded) exceeds ``seed_threshold``;
3. ``skimage.segmentation.watershed`` floods the boundary probability from the seeds, within
   the object pixels, with a little compactness (1e-3: where the boundary probability is
   flat, a pixel goes to its nearest seed); object regions no seed reaches become objects;
4. holes inside an object are filled (``fill_holes``); objects under ``min_size`` pixels, and
   objects whose score (mean ``1 - p(background)`` over their pixels) is under ``min_score``,
   are dropped; ids are renumbered 1..N in raster order of each object's first pixel;
5. each object's class is the most probable object class summed over its pixels, and the class
   mask is that class on the object's pixels (0 elsewhere), so mask and objects always agree.

``distance`` head: the softmax has the data's K classes and the last channel is the predicted
normalised distance of each object pixel to its object's edge (``object_distance``: 1 at each
object's centre, falling to about 0 at its edge and where it touches another object). Steps 1,
4 and 5 are the same; the distance is smoothed by a Gaussian of ``distance_sigma`` pixels, the
seeds are its h-maxima of depth ``seed_h`` within the object pixels (``seed_h`` 0: the
4-connected regions of object pixels whose distance exceeds ``seed_threshold``), each
object's core, which a valley separates from the cores of the objects it touches, and the
watershed floods the negative (smoothed) distance from them within the object pixels, so each
pixel joins the core it climbs to. A trained map is flatter and noisier than the target (a
15-minute DSB 2018 model peaks near 0.5 with pixel noise of about 0.1 inside each nucleus): a
fixed threshold near its peaks cut each nucleus into the bumps above it, while an h-maximum
is a peak that stands ``seed_h`` above the valley to any higher one, whatever its height.

``rays`` head: the softmax has the data's K classes, channel K is the object probability
(``object_distance``, a sigmoid) and the last ``n_rays`` channels the predicted ray lengths
in pixels (``unetkit.data.rays``). The objects are StarDist's: the pixels whose probability
exceeds ``prob_thresh`` propose their star-convex polygons, greedy non-maximum suppression
at ``nms_thresh`` keeps the best, and they are drawn, the more probable on top
(``unetkit.objects.stars``). With ``rays_to_foreground`` (the default) only object pixels
of step 1 propose polygons (an under-trained model's flat probability near 0.5 would make
every pixel a candidate), each polygon is cut to the object pixels, and object pixels that
no polygon covers join the nearest polygon within 3 px
(``skimage.segmentation.expand_labels``); object regions farther from every polygon are
dropped, not made objects. On the true maps of the DSB 2018 test images of
``bench/dsb_instances.py`` (32 rays) this raises the mean AP over IoU 0.5:0.95 from 0.974
(the polygons as drawn) to 0.990 (AP@0.5 0.999 either way). Steps 4 and 5 follow.

``offsets`` head: the softmax has the data's K classes plus ``boundary`` (channel K), and
channels K + 1, K + 2 are the predicted (x, y) offsets of each object pixel from its
object's centre over its radius (``unetkit.data.offsets``). As the boundary head, with two
changes where the offsets converge (``split_lines``: the negative divergence of the offsets
smoothed at ``distance_sigma``, about 1 per pixel between touching objects): a pixel there
above ``split_threshold`` is no seed, and the watershed floods the boundary probability plus
it, so two touching objects whose boundary the class misses are still two seeds.

Post-processing runs once on the stitched probabilities, never per tile, so an object cut by a
tile border is one object with one id.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..config import ObjectConfig
from .labels import renumber


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """Background regions enclosed by a single object join it (4-connected holes)."""
    holes = ndimage.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    hole_ids, count = ndimage.label(holes)
    # the object around each hole: the largest id on its outer ring (a hole touching two
    # objects is the space between them, not a hole of one: left as it is)
    ring = ndimage.binary_dilation(holes) & ~holes
    around = labels[ring]
    owner = ndimage.grey_dilation(hole_ids, size=3)[ring]
    out = labels.copy()
    low = ndimage.minimum(around, owner, index=np.arange(1, count + 1))
    high = ndimage.maximum(around, owner, index=np.arange(1, count + 1))
    single = (np.asarray(low) == np.asarray(high)) & (np.asarray(low) > 0)
    lut = np.zeros(count + 1, np.int32)
    lut[1:][single] = np.asarray(low, np.int32)[single]
    fill = lut[hole_ids]
    out[holes] = fill[holes]
    return out


def object_scores(labels: np.ndarray, objectness: np.ndarray) -> dict[int, float]:
    """Each object's score: the mean of ``objectness`` (its probability of being an object,
    ``1 - p(background)``) over its pixels, as ``min_score`` judges it.

    Args:
        labels: (H, W) integer ids, 0 = background.
        objectness: (H, W) float.

    Returns:
        id -> score, for the ids present.
    """
    flat = np.asarray(labels).ravel()
    if not flat.size:
        return {}
    areas, means = _areas_and_means(flat, objectness)
    return {int(i): float(means[i]) for i in np.flatnonzero(areas) if i > 0}


def _areas_and_means(flat: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per id of the flat labels ``flat``: its pixel count and the mean of ``values`` over
    its pixels (0 for an absent id)."""
    areas = np.bincount(flat)
    sums = np.bincount(flat, np.asarray(values, np.float64).ravel(), minlength=areas.size)
    return areas, sums / np.maximum(areas, 1)


def _drop_weak_and_small(
    labels: np.ndarray, objectness: np.ndarray, min_size: int, min_score: float
) -> np.ndarray:
    """``labels`` without the objects under ``min_size`` pixels or under ``min_score`` mean
    ``objectness``."""
    if not labels.any() or (min_size <= 1 and min_score <= 0):
        return labels
    areas, score = _areas_and_means(labels.ravel(), objectness)
    drop = areas < min_size
    if min_score > 0:
        drop |= score < min_score
    drop[0] = False
    return np.where(drop[labels], 0, labels)


def separate_objects(
    probs: np.ndarray, config: ObjectConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class mask and object ids from an instance model's probabilities.

    Args:
        probs: (K + 1, H, W): background, K - 1 object classes, then the boundary class
            (``boundary`` head: a softmax over all K + 1) or the normalised distance
            (``distance`` head: a softmax over the first K); ``rays`` head (K + 1 +
            ``n_rays``, H, W): the K class probabilities, the object probability and the
            ray lengths in pixels; ``offsets`` head (K + 3, H, W): the boundary head's and
            the (x, y) offsets.
        config: the head, thresholds, the distance head's smoothing and seed depth, the
            rays head's thresholds, minimum size and score, hole filling (``min_size`` None
            counts as 0).

    Returns:
        ((H, W) uint8 class mask in 0..K-1, (H, W) int32 object ids 0..N).
    """
    cfg = config or ObjectConfig()
    probs = np.asarray(probs, dtype=np.float32)
    k = class_channels(probs, cfg)
    objects = (1.0 - probs[0]) > cfg.fg_threshold
    if cfg.head == "rays":
        labels = fit_to_objects(star_objects_of(probs, k, objects, cfg), objects, cfg)
    else:
        labels = _watershed_labels(probs, k, objects, cfg)
        unseeded = objects & (labels == 0)
        if unseeded.any():
            extra, _ = ndimage.label(unseeded)
            top = int(labels.max())
            labels[extra > 0] = extra[extra > 0] + top
    return finish_objects(labels, probs, k, cfg)


def class_channels(probs: np.ndarray, cfg: ObjectConfig) -> int:
    """K, the data's classes among an instance model's output channels (``probs`` (C, H,
    W)): one channel follows them, and the rays head's rays after it."""
    after = 1 + {"rays": cfg.n_rays, "offsets": 2}.get(cfg.head, 0)
    k = probs.shape[0] - after
    if k < 2:
        raise ValueError(
            f"{cfg.head} head probabilities need >= {2 + after} channels; got {probs.shape[0]}"
        )
    return k


def _watershed_labels(
    probs: np.ndarray, k: int, objects: np.ndarray, cfg: ObjectConfig
) -> np.ndarray:
    """The boundary and distance heads' seeded watershed within the object pixels."""
    from skimage.segmentation import watershed

    if cfg.head == "distance":
        distance = probs[k]
        if cfg.distance_sigma > 0:
            distance = ndimage.gaussian_filter(distance, cfg.distance_sigma)
        if cfg.seed_h > 0:
            from skimage.morphology import h_maxima

            cores = h_maxima(distance, cfg.seed_h).astype(bool)
        else:
            cores = distance > cfg.seed_threshold
        seeds, _ = ndimage.label(objects & cores)
        return watershed(-distance, markers=seeds, mask=objects).astype(np.int32)
    interior = probs[1:k].sum(0)
    cores, flood = interior > cfg.seed_threshold, probs[k]
    if cfg.head == "offsets":  # no seed, and a ridge to flood, where offsets converge
        from ..data.offsets import split_lines

        lines = split_lines(probs[k + 1 : k + 3], cfg.distance_sigma)
        cores &= lines < cfg.split_threshold
        flood = flood + lines
    seeds, _ = ndimage.label(objects & cores)
    # a little compactness: on a flat boundary, pixels go to the nearest seed
    labels = watershed(flood, markers=seeds, mask=objects, compactness=1e-3)
    return labels.astype(np.int32)


def star_objects_of(
    probs: np.ndarray, k: int, objects: np.ndarray, cfg: ObjectConfig
) -> np.ndarray:
    """The rays head's polygons (``unetkit.objects.stars``) at the config's thresholds; with
    ``rays_to_foreground`` only object pixels propose them."""
    from .stars import star_objects

    where = objects if cfg.rays_to_foreground else None
    return star_objects(probs[k], probs[k + 1 :], cfg.prob_thresh, cfg.nms_thresh, where)


def fit_to_objects(labels: np.ndarray, objects: np.ndarray, cfg: ObjectConfig) -> np.ndarray:
    """With ``rays_to_foreground``, polygons cut to the object pixels, and the object pixels
    no polygon covers given to the nearest within ``GROW`` px."""
    if not cfg.rays_to_foreground or not labels.any():
        return labels
    from skimage.segmentation import expand_labels

    return np.where(objects, expand_labels(np.where(objects, labels, 0), GROW), 0)


GROW = 3  # px: how far the rays head's polygons grow into object pixels that none covers


def finish_objects(
    labels: np.ndarray, probs: np.ndarray, k: int, cfg: ObjectConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Holes filled, small and weak objects dropped, ids renumbered, and the class mask."""
    if cfg.fill_holes:
        labels = _fill_holes(labels)
    labels = _drop_weak_and_small(labels, 1.0 - probs[0], cfg.min_size or 0, cfg.min_score)
    labels = renumber(labels)
    return _class_mask(labels, probs, k), labels


def _class_mask(labels: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Each object's class (the most probable of the K - 1 object classes summed over its
    pixels) on its pixels, 0 elsewhere."""
    mask = np.zeros(labels.shape, np.uint8)
    count = int(labels.max())
    if count:
        inside = labels > 0
        if k == 2:
            mask[inside] = 1
        else:  # summed class probability over each object, the head's channels excluded
            ids = labels[inside]
            sums = np.stack(
                [np.bincount(ids, probs[c][inside], minlength=count + 1) for c in range(1, k)]
            )
            best = (sums.argmax(0) + 1).astype(np.uint8)
            mask[inside] = best[ids]
    return mask


# regions_between's own defaults (PredictConfig overrides them): on ISBI 2012's training
# slices (00-23, a default 10-minute model) seeds at 0.9-0.95 and >= 10 px gave the lowest
# adapted Rand error (0.030 / 0.027, against 0.055 at 0.5 and 0.128 for connected components)
BETWEEN_DEFAULTS = ObjectConfig(seed_threshold=0.9, min_size=10)


def regions_between(boundary: np.ndarray, config: ObjectConfig | None = None) -> np.ndarray:
    """Objects that a boundary class separates (cells between EM membranes, grains between
    grain boundaries), from that class's probability: every pixel goes to one region.

    1. seeds: the 4-connected regions where ``1 - boundary > seed_threshold`` (confidently not
       boundary); seeds under ``min_size`` pixels are dropped (noise inside a cell would split
       it);
    2. ``skimage.segmentation.watershed`` floods the boundary probability from the seeds over
       the whole image (no watershed lines: boundary pixels join the region on their side),
       so a gap of a few pixels in a predicted membrane no longer merges two cells, as it does
       with connected components of the thresholded mask;
    3. ids are renumbered 1..N in raster order of each region's first pixel.

    Args:
        boundary: (H, W) probability of the boundary class.
        config: ``seed_threshold`` and ``min_size`` (None counts as 0) are used; default
            ``BETWEEN_DEFAULTS``.

    Returns:
        (H, W) int32 region ids 1..N (0 only when there is no seed at all: the whole image
        is boundary).
    """
    from skimage.segmentation import watershed

    cfg = config or BETWEEN_DEFAULTS
    boundary = np.asarray(boundary, dtype=np.float32)
    if boundary.ndim != 2:
        raise ValueError(f"boundary probability must be (H, W); got {boundary.shape}")
    seeds, count = ndimage.label((1.0 - boundary) > cfg.seed_threshold)
    min_size = cfg.min_size or 0
    if min_size > 1 and count:
        areas = np.bincount(seeds.ravel(), minlength=count + 1)
        small = areas < min_size
        small[0] = False
        seeds[small[seeds]] = 0
    if not seeds.any():
        return np.zeros(boundary.shape, np.int32)
    labels = watershed(boundary, markers=seeds).astype(np.int32)
    return renumber(labels)
