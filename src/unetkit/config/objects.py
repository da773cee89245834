"""``ObjectConfig``: the training target and post-processing of ``--task instance`` models."""

from __future__ import annotations

from dataclasses import dataclass

from .base import _check_choices, _check_min, _check_range, _Config
from .choices import INSTANCE_HEADS


@dataclass
class ObjectConfig(_Config):
    """Objects of ``--task instance`` models: the training target and the post-processing.

    Stored in the checkpoint; ``predict`` / ``evaluate`` may override the post-processing.

    Args:
        head: what the network learns besides the data's classes (``unetkit.data.targets``):
            ``boundary``, one more softmax class at each object's edge, seeds from the
            interior probability; ``distance``, one more channel (a sigmoid) with each object
            pixel's distance to its object's edge divided by the object's largest
            (``object_distance``), seeds from its high values and a watershed on it; ``rays``,
            that channel (the object probability) plus ``n_rays`` channels with the
            distances from each object pixel to its object's edge along evenly spaced rays
            (``unetkit.data.rays``, StarDist's representation): each pixel proposes a
            star-convex polygon, and non-maximum suppression keeps the best
            (``unetkit.objects.stars``); ``offsets``, the boundary class plus two channels
            with each object pixel's offset from its object's centre over its radius
            (``unetkit.data.offsets``, HoVer-Net's maps), whose steep convergence marks
            where touching objects split: seeds are interior pixels off those lines.
        boundary_width: width in pixels of the ``boundary`` class trained at each object's
            edge (``unetkit.data.targets``; ``boundary`` head).
        boundary_fraction: the boundary class also covers each object's pixels closer to its
            edge than this fraction of its inner radius (0 = off), so only the object's core
            is interior and the seeds of touching objects lie apart
            (``unetkit.data.targets.object_edges``).
        fg_threshold: a pixel is an object pixel where ``1 - p(background) > fg_threshold``.
        seed_threshold: watershed seeds are the 4-connected regions where the summed
            probability of the object classes' interiors exceeds this (``boundary`` head), or
            where the predicted normalised distance exceeds it (``distance`` head with
            ``seed_h`` 0; with ``seed_h`` > 0 the distance head does not use it).
        distance_sigma: ``distance`` head: the predicted distance is smoothed by a Gaussian of
            this sigma (pixels; 0 = off) before the seeds are found and the watershed floods
            it: a trained map is textured inside each object, and even a perfect map has
            1-pixel ripples on its ridges that h-maxima would take for peaks; ``offsets``
            head: the offsets are smoothed by it before their split lines are read.
        distance_weight: ``distance`` head: the distance term's factor in the loss, beside the
            class loss (``unetkit.train.head_losses.DistanceHeadLoss``); large enough that the
            distance map rises to its peaks rather than staying flat.
        seed_h: ``distance`` head: the seeds are the h-maxima of the (smoothed) distance, its
            regional maxima that rise at least ``seed_h`` above every path to a higher one
            (``skimage.morphology.h_maxima``), within the object pixels: one per object
            whatever its peak height, the bumps of a noisy map merged; 0: the 4-connected
            regions above ``seed_threshold`` instead (with ``distance_sigma`` 0 too, the
            distance head's first seeding).
        n_rays: ``rays`` head: rays per pixel, a multiple of 4 (StarDist's default 32).
        rays_weight: ``rays`` head: the factor of the ray term (the mean absolute error of
            the ray lengths in pixels, weighted by the object probability target) in the
            loss (``unetkit.train.head_losses.RaysHeadLoss``). 1.0 keeps StarDist's balance of
            0.2 between its distance and probability terms, the probability term here
            weighing ``distance_weight`` (5).
        ray_scale: ``rays`` head: the network's ray channels are ray lengths divided by this
            (pixels), so they are near 1 like its other outputs (their biases start at 1: the
            mean ray); None: chosen when training starts, the mean ray length over the
            training objects' pixels.
        prob_thresh: ``rays`` head: pixels whose object probability exceeds this propose
            their polygons (StarDist's default 0.5); training ends by choosing it and
            ``nms_thresh`` on the validation images (``unetkit.objects.thresholds``).
        nms_thresh: ``rays`` head: a proposed polygon is dropped when it covers more than
            this share of a better one's or of its own area (intersection over the smaller;
            StarDist's default 0.4).
        rays_to_foreground: ``rays`` head: only object pixels (``1 - p(background) >
            fg_threshold``) propose polygons, the kept polygons are cut to the object
            pixels, and object pixels that no polygon covers join the nearest polygon within
            3 px (a polygon of 32 rays only approximates an object's outline); False: every pixel
            may propose, and the polygons are the objects as drawn (StarDist's output).
        offsets_weight: ``offsets`` head: the factor of the offset term (mean squared error of
            the offsets plus twice that of their gradients inside objects, HoVer-Net's
            balance) in the loss (``unetkit.train.head_losses.OffsetsHeadLoss``).
        split_threshold: ``offsets`` head: interior pixels where the predicted offsets
            converge faster than this (the negative divergence per pixel of the offsets
            smoothed at ``distance_sigma``, ``unetkit.data.offsets.split_lines``; about 1
            between two touching objects, negative inside one) are no seed.
        min_size: objects smaller than this (pixels) are dropped; None: chosen when training
            starts, a fifth of the 10th percentile of the training objects' areas (>= 1).
        min_score: objects whose score, the mean object probability ``1 - p(background)``
            over their pixels, is under this are dropped (a detector's score threshold):
            fragments the network is unsure of.
        fill_holes: holes inside an object become part of it.
    """

    head: str = "boundary"
    boundary_width: int = 2
    boundary_fraction: float = 0.0
    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    distance_sigma: float = 1.0
    seed_h: float = 0.15
    distance_weight: float = 5.0
    n_rays: int = 32
    rays_weight: float = 1.0
    ray_scale: float | None = None
    prob_thresh: float = 0.5
    nms_thresh: float = 0.4
    rays_to_foreground: bool = True
    offsets_weight: float = 1.0
    split_threshold: float = 0.15
    min_size: int | None = None
    min_score: float = 0.8
    fill_holes: bool = True

    def __post_init__(self) -> None:
        _check_choices(self, {"head": INSTANCE_HEADS})
        _check_min(self, ("boundary_width",), 1)
        _check_range("boundary_fraction", self.boundary_fraction, 0.0, 1.0)
        _check_range("fg_threshold", self.fg_threshold, 0.0, 1.0)
        _check_range("seed_threshold", self.seed_threshold, 0.0, 1.0)
        _check_range("distance_sigma", self.distance_sigma, 0.0, float("inf"))
        _check_range("seed_h", self.seed_h, 0.0, 1.0)
        _check_range("distance_weight", self.distance_weight, 0.0, float("inf"))
        if self.n_rays < 8 or self.n_rays % 4:
            raise ValueError(f"n_rays must be a multiple of 4 and >= 8; got {self.n_rays}")
        _check_range("rays_weight", self.rays_weight, 0.0, float("inf"))
        if self.ray_scale is not None:
            _check_range("ray_scale", self.ray_scale, 1e-6, float("inf"))
        _check_range("offsets_weight", self.offsets_weight, 0.0, float("inf"))
        _check_range("split_threshold", self.split_threshold, 0.0, float("inf"))
        _check_range("prob_thresh", self.prob_thresh, 0.0, 1.0)
        _check_range("nms_thresh", self.nms_thresh, 0.0, 1.0, closed=True)
        _check_range("min_score", self.min_score, 0.0, 1.0, closed=True)
        if self.min_size is not None:
            _check_min(self, ("min_size",), 0)
