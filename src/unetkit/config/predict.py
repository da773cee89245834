"""``PredictConfig``: how ``unetkit predict`` turns an image of any size into a mask."""

from __future__ import annotations

from dataclasses import dataclass

from .base import _check_choices, _check_min, _check_range, _Config
from .choices import BLENDS, PRECISIONS, STRATEGIES
from .objects import ObjectConfig


@dataclass
class PredictConfig(_Config):
    """How ``unetkit predict`` turns an image of any size into a mask.

    ``tile`` None and ``batch_size`` 0 are chosen from the network's width, the device and
    the memory (``unetkit.infer.tiling.auto_tiling``). Same-padding networks discard
    ``context`` pixels (``2**(depth + 1)``) at each inner tile border, so tiles need no
    ``overlap`` (0) to agree with the whole-image prediction (figures: docs/benchmarks.md,
    "Tiled prediction"); an overlap blends neighbours (``blend``) where they share kept
    pixels. Valid-padding networks (the paper's overlap-tile) are exact and ignore ``overlap``.

    ``fg_threshold``, ``seed_threshold``, ``min_size``, ``min_score``, ``fill_holes``,
    ``prob_thresh``, ``nms_thresh`` and ``split_threshold`` override the post-processing
    stored in an instance model (``ObjectConfig``); None keeps the model's.

    ``objects_between`` (a class name or index; semantic models): objects are the regions
    that class separates, such as cells between EM membranes or grains between grain
    boundaries: a seeded watershed on that class's probability assigns every pixel to one
    region (``unetkit.objects.postprocess.regions_between``; seeds where ``1 - p >
    seed_threshold``, default 0.9, and at least ``min_size`` pixels, default 10).
    """

    strategy: str = "auto"
    tile: tuple[int, int] | None = None
    overlap: float = 0.0
    blend: str = "gaussian"
    batch_size: int = 0
    tta: bool = False
    threshold: float = 0.5
    min_area: int = 0
    fg_threshold: float | None = None
    seed_threshold: float | None = None
    min_size: int | None = None
    min_score: float | None = None
    fill_holes: bool | None = None
    prob_thresh: float | None = None
    nms_thresh: float | None = None
    split_threshold: float | None = None
    objects_between: str | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        _check_choices(self, {"strategy": STRATEGIES, "blend": BLENDS, "precision": PRECISIONS})
        _check_range("overlap", self.overlap, 0.0, 1.0)
        _check_range("threshold", self.threshold, 0.0, 1.0, closed=True)
        _check_min(self, ("batch_size", "min_area"), 0)
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < 1):
            raise ValueError(f"tile must be (height, width) >= 1; got {self.tile}")
        self.object_overrides()  # validated like the model's own settings

    def object_overrides(self, base: ObjectConfig | None = None) -> ObjectConfig:
        """``base`` (an instance model's post-processing) with this config's overrides."""
        names = ("fg_threshold", "seed_threshold", "min_size", "min_score", "fill_holes",
                 "prob_thresh", "nms_thresh", "split_threshold")  # fmt: skip
        changes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return (base or ObjectConfig()).replace(**changes)
