"""``DataConfig`` (how images become tensors; the preprocessing a checkpoint stores) and
``AugmentConfig`` (the training augmentation)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import _check_choices, _Config
from .choices import NORMALIZATIONS, RESIZES, SAMPLINGS


@dataclass
class DataConfig(_Config):
    """How images become tensors; stored in checkpoints as the input preprocessing.

    Args:
        channels: image channels the model expects (1 grey, 3 RGB, N stacks; 0 = as in the
            data, resolved when training starts).
        resize: ``letterbox`` (pad to a square, then resize), ``resize`` (stretch),
            ``random-crop`` (train on patches of large images), ``none``.
        size: (height, width) for letterbox / resize; patch size for random-crop; 0x0 (the
            default) is decided by the auto recipe when training starts
            (``unetkit.train.plan``), and checkpoints always hold the size used.
        normalize: ``image`` (per-image z-score), ``percentile`` (per-image 1 / 99.8 %
            percentiles), ``dataset`` (the dataset's mean / std), ``fixed`` (``mean`` / ``std``
            as given), or ``auto``: chosen from the data fingerprint when training starts
            (``unetkit.data.fingerprint``); see ``unetkit.data.normalize``.
        mean: per-channel ``(x - mean) / std`` after scaling to [0, 1], for ``dataset`` and
            ``fixed``.
        std: the per-channel divisor of that transform.
        ignore_index: mask value excluded from losses and metrics.
        binary_255: map 0/255 masks to 0/1 when loading.
        cache: keep decoded images in memory when the dataset fits.
        oversample: share of training crops centred on a foreground pixel (of a class drawn
            uniformly from those the image holds, so rare classes are seen as often as common
            ones); nnU-Net forces one third. Random-crop training only.
        sampling: random crops each training image gives per epoch: ``area`` one per
            patch-sized area of the image (rounded, at least one), so every pixel of a data set
            of mixed sizes is seen about equally often (a 1024x1024 image gives 16 crops of
            256x256 per epoch, a 256x256 one 1); ``image`` one per image. Random-crop only.
    """

    channels: int = 0
    resize: str = "random-crop"
    size: tuple[int, int] = (0, 0)
    normalize: str = "auto"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    ignore_index: int = 255
    binary_255: bool = True
    cache: bool = True
    oversample: float = 0.33
    sampling: str = "image"

    def __post_init__(self) -> None:
        _check_choices(
            self, {"resize": RESIZES, "sampling": SAMPLINGS, "normalize": NORMALIZATIONS}
        )
        if not 0.0 <= self.oversample <= 1.0:
            raise ValueError(f"oversample must be in [0, 1]; got {self.oversample}")
        if min(self.std, default=1.0) <= 0:
            raise ValueError(f"std must be > 0; got {self.std}")
        if len(self.size) != 2 or not (min(self.size) >= 1 or tuple(self.size) == (0, 0)):
            raise ValueError(f"size must be (height, width) > 0, or 0x0 = auto; got {self.size}")

    def size_or(self, default: tuple[int, int] = (256, 256)) -> tuple[int, int]:
        """``size``, or ``default`` while it is 0x0 (not decided yet)."""
        return default if tuple(self.size) == (0, 0) else (int(self.size[0]), int(self.size[1]))


GAMMA = 0.1  # gamma 0.90-1.11
SMALL_SET_GAMMA, SMALL_SET_GAMMA_IMAGES = 0.5, 24  # gamma 0.61-1.65 under 24 images


@dataclass
class AugmentConfig(_Config):
    """Joint image + mask augmentation, run on whole batches on the training device.

    ``affine``, ``elastic`` and ``blur`` are per-image probabilities; ``rotate_deg``, ``scale``
    and ``shift`` (a fraction of the size) bound the affine transform; ``elastic_sigma`` is the
    std in pixels of the paper's coarse ``elastic_grid`` x ``elastic_grid`` displacements;
    ``brightness``, ``contrast``, ``gamma`` and ``noise`` are strengths (0 turns one off);
    ``gamma`` s draws each crop's gamma from exp(-s) to exp(s). ``gamma`` None: the training
    plan's choice, ``SMALL_SET_GAMMA`` for a set of fewer than ``SMALL_SET_GAMMA_IMAGES``
    images (their few exposures stand in for many), else ``GAMMA``.
    """

    flip: bool = True
    rot90: bool = True
    affine: float = 0.5
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05
    elastic: float = 0.5
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float | None = None
    noise: float = 0.02
    blur: float = 0.1

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every augmentation off (``unetkit train --no-augment``)."""
        return cls(flip=False, rot90=False, affine=0.0, elastic=0.0, brightness=0.0,
                   contrast=0.0, gamma=0.0, noise=0.0, blur=0.0)  # fmt: skip
