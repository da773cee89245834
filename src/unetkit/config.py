"""Typed configuration: plain dataclasses with a strict ``from_dict`` and a ``to_dict``.

Every run prints its resolved configuration and every checkpoint stores it, so a model can be
rebuilt and a run resumed from plain data alone.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="_Config")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_min(cfg: Any, names: tuple[str, ...], low: float, strict: bool = False) -> None:
    """Each field ``>= low`` (``> low`` when ``strict``); NaN never passes."""
    for name in names:
        value = getattr(cfg, name)
        if not (value > low if strict else value >= low):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}; got {value}")


def _check_range(name: str, value: float, low: float, high: float, closed: bool = False) -> None:
    """``low <= value < high`` (``<= high`` when ``closed``); NaN never passes."""
    if not (low <= value <= high if closed else low <= value < high):
        raise ValueError(
            f"{name} must be in [{low:g}, {high:g}{']' if closed else ')'}; got {value}"
        )


def parse_size(text: str, name: str = "size") -> tuple[int, int]:
    """``"512"`` -> (512, 512), ``"512x384"`` -> (512, 384); ``ValueError`` names ``name``."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"{name} must be N or HxW (e.g. 512 or 512x384); got {text!r}")
    return parts[0], parts[-1]


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as a field annotated ``annotation`` holds it; the one check of every config
    value read from plain data (``from_dict``) or given as an override (``apply_overrides``).

    JSON has no tuples and no configs, so lists become tuples (length and items checked),
    dicts nested configs (their keys named ``key.field`` in errors) and integers floats where
    a float is expected. Nothing else is converted: a bool is not a number, a float is not an
    int, a string is not a tuple.

    Raises:
        ValueError: ``"KEY: expected TYPE; got VALUE"``, one line.
    """
    fits, typed = _typed(value, annotation, key)
    if not fits:
        raise ValueError(f"{key}: expected {_type_name(annotation)}; got {value!r}")
    return typed


def _typed(value: Any, annotation: Any, key: str) -> tuple[bool, Any]:
    """(fits, the value converted); a union takes its first member that fits."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            fits, typed = _typed(value, arg, key)
            if fits:
                return True, typed
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        elif len(args) != len(value):
            return False, value
        else:
            items = list(args)
        checked = [_typed(v, a, key) for v, a in zip(value, items, strict=True)]
        return all(ok for ok, _ in checked), tuple(v for _, v in checked)
    if isinstance(annotation, type) and issubclass(annotation, _Config):
        if isinstance(value, annotation):
            return True, value
        if isinstance(value, Mapping):
            return True, annotation._build(value, f"{key}.")
        return False, value
    if isinstance(value, bool) and annotation in (int, float):
        return False, value
    if annotation is float:  # numpy's numbers too, as plain Python ones (to_dict needs them)
        fits = isinstance(value, numbers.Real)
        return fits, float(value) if fits else value
    if annotation is int:
        fits = isinstance(value, numbers.Integral)
        return fits, int(value) if fits else value
    return isinstance(annotation, type) and isinstance(value, annotation), value


def _type_name(annotation: Any) -> str:
    """``tuple[int, int]``, ``int | None``, ``ModelConfig | None``: as written in the class."""
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if args:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return str(getattr(annotation, "__name__", annotation))


class _Config:
    """Mixin: strict construction from dicts, conversion to plain dicts, pretty printing."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Build from a dict (``to_dict`` output, a JSON config): unknown keys raise
        ``ValueError`` listing the valid ones, values of the wrong type one naming the key
        (``coerce``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: expected a dict; got a {type(data).__name__}")
        return cls._build(data, "")

    @classmethod
    def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, int, float, bool, None) safe for JSON and checkpoints."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def pretty(self) -> str:
        """Indented JSON, as printed at the start of every run."""
        return json.dumps(self.to_dict(), indent=2)


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """A copy of ``config`` with dotted fields set: ``{"lr": 0.01, "data.size": (256, 256)}``.

    Each value is checked against its field's type as ``from_dict`` checks it (``coerce``:
    ints are accepted for floats, lists for tuples, dicts for nested configs), and the result
    is validated again as it is built, as ``replace`` does. A nested config that is None
    (``TrainConfig.model`` before it is resolved) must be set before its fields are.

    Raises:
        ValueError: one line naming the key: an unknown key, a value of the wrong type
            (with the expected type), a nested key under a field that is not a config, or a
            value the config's own checks refuse.
    """
    return _apply(config, overrides, "")


def _apply(config: T, overrides: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        name, _, rest = key.partition(".")
        if name not in names:
            raise ValueError(
                f"unknown key {prefix}{key}: {type(config).__name__} has no field {name!r}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        if rest:
            nested.setdefault(name, {})[rest] = value
        else:
            changes[name] = coerce(value, hints[name], f"{prefix}{name}")
    for name, inner in nested.items():
        current = changes.get(name, getattr(config, name))
        if not isinstance(current, _Config):
            what = "None (set it first)" if current is None else f"a {type(current).__name__}"
            key = f"{prefix}{name}.{next(iter(inner))}"
            raise ValueError(f"{key}: {prefix}{name} is {what}, not a config")
        changes[name] = _apply(current, inner, f"{prefix}{name}.")
    return config.replace(**changes) if changes else config


# The allowed values of every string setting, defined once here (the code that acts on them
# imports them from here).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_EPOCHS = 50  # without --epochs and without a time budget
NORMALIZATIONS = ("auto", "image", "percentile", "dataset", "fixed")
RESIZES = ("letterbox", "resize", "random-crop", "none")
SAMPLINGS = ("image", "area")
TASKS = ("auto", "multiclass", "binary", "regression", "instance")
LOSSES = ("auto", "ce", "bce", "dice", "ce+dice", "bce+dice", "mse", "l1")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "poly", "plateau")
STRATEGIES = ("auto", "full", "letterbox", "resize", "tile")
BLENDS = ("gaussian", "constant")
PADDINGS = ("valid", "zeros", "reflect")
NORMS = ("none", "batch", "group", "instance")
ACTIVATIONS = ("relu", "leaky")
DOWNS = ("maxpool", "avgpool", "strided")
UPS = ("transposed", "bilinear", "nearest")
MERGES = ("crop", "pad", "resize")
HEADS = ("logits", "sigmoid", "pixel_shuffle")
BLOCKS = ("double3x3", "3x3+1x1")
INSTANCE_HEADS = ("boundary", "distance", "rays")


@dataclass
class ModelConfig(_Config):
    """Everything that defines a U-Net's architecture (see ``unetkit.models.presets``).

    Args:
        in_channels: input image channels.
        out_channels: classes (softmax logits), sigmoid channels, or image channels (restore).
        depth: number of down-sampling steps (the paper: 4).
        base_width: channels of the first level; level i has ``base_width * 2**i``.
        widths: explicit per-level widths (length ``depth + 1``), overrides ``base_width``.
        padding: ``valid`` (unpadded 3x3 convs, the paper), ``zeros`` or ``reflect``.
        norm: normalisation after each conv (or before it when ``norm_first``).
        norm_first: normalise before each conv (a BN-first layout of Keras tutorials).
        groups: groups for group norm.
        activation: ``relu`` or ``leaky``; ``leaky_slope`` its negative slope.
        dropout: Dropout2d after every conv's activation in every block.
        dropout_deep: Dropout2d after the deepest encoder block and the bottleneck (the paper's
            "drop-out layers at the end of the contracting path").
        conv_bias: bias in the 3x3 convs (off when followed by batch norm).
        block: ``double3x3`` (two 3x3 convs) or ``3x3+1x1`` (a 3x3 conv, then a
            1x1 conv that sets the width).
        dilation: dilation of the encoder's 3x3 convs (2 widens a shallow U-Net's
            receptive field).
        down: ``maxpool``, ``avgpool`` or ``strided`` (3x3 stride-2 conv keeping the width).
        down_norm: norm layer in the strided down-sampling conv.
        up: ``transposed`` (2x2 stride-2 transposed conv), ``bilinear`` (align_corners=True) or
            ``nearest``. ``bilinear``/``nearest`` without ``up_conv`` halve widths in the
            decoder blocks instead (milesial's layout).
        up_conv: kernel of a conv after the up-sampling that halves the channels (0 = none).
            With ``transposed`` the transposed conv then keeps the width.
        up_bias: bias in the transposed conv (TensorFlow tutorials'
            ``conv2d_transpose`` often has none).
        up_act: activation after the up-sampling.
        merge: how a skip meets the up-sampled map: ``crop`` the skip (the paper), ``pad`` the
            up-sampled map (milesial; odd sizes work), ``resize`` the skip bilinearly.
        head: ``logits`` (softmax over classes), ``sigmoid`` (one independent channel per
            class), ``pixel_shuffle`` (``out_channels * scale**2`` then depth-to-space).
        head_kernel: kernel size of the final conv (1 or 3).
        scale: pixel-shuffle factor of the ``pixel_shuffle`` head.
        output_resize: resize the output to the input size.
        checkpointing: gradient checkpointing of every block while training.
    """

    in_channels: int = 1
    out_channels: int = 2
    depth: int = 4
    base_width: int = 64
    widths: tuple[int, ...] | None = None
    padding: str = "zeros"
    norm: str = "batch"
    norm_first: bool = False
    groups: int = 8
    activation: str = "relu"
    leaky_slope: float = 0.01
    dropout: float = 0.0
    dropout_deep: float = 0.0
    conv_bias: bool = False
    block: str = "double3x3"
    dilation: int = 1
    down: str = "maxpool"
    down_norm: bool = True
    up: str = "transposed"
    up_conv: int = 0
    up_bias: bool = True
    up_act: bool = False
    merge: str = "pad"
    head: str = "logits"
    head_kernel: int = 1
    scale: int = 1
    output_resize: bool = False
    checkpointing: bool = False

    def __post_init__(self) -> None:
        _check_choice("padding", self.padding, PADDINGS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("down", self.down, DOWNS)
        _check_choice("up", self.up, UPS)
        _check_choice("merge", self.merge, MERGES)
        _check_choice("head", self.head, HEADS)
        _check_choice("block", self.block, BLOCKS)
        for name in ("in_channels", "out_channels", "depth", "base_width", "dilation", "scale"):
            if int(getattr(self, name)) < (0 if name == "depth" else 1):
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.widths is not None and len(self.widths) != self.depth + 1:
            raise ValueError(
                f"widths needs depth + 1 = {self.depth + 1} entries; got {len(self.widths)}"
            )
        if self.head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3; got {self.head_kernel}")
        if self.up_conv not in (0, 1, 3):
            raise ValueError(f"up_conv must be 0, 1 or 3; got {self.up_conv}")
        if self.head != "pixel_shuffle" and self.scale != 1:
            raise ValueError(f"scale {self.scale} needs head='pixel_shuffle'")
        for name in ("dropout", "dropout_deep"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}")

    @property
    def level_widths(self) -> tuple[int, ...]:
        """Channels per level, shallow to deep (``depth + 1`` entries)."""
        if self.widths is not None:
            return tuple(int(w) for w in self.widths)
        return tuple(self.base_width * 2**i for i in range(self.depth + 1))


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
            (``unetkit.train.recipe``), and checkpoints always hold the size used.
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
        _check_choice("resize", self.resize, RESIZES)
        _check_choice("sampling", self.sampling, SAMPLINGS)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        if not 0.0 <= self.oversample <= 1.0:
            raise ValueError(f"oversample must be in [0, 1]; got {self.oversample}")
        if min(self.std, default=1.0) <= 0:
            raise ValueError(f"std must be > 0; got {self.std}")
        if len(self.size) != 2 or not (min(self.size) >= 1 or tuple(self.size) == (0, 0)):
            raise ValueError(f"size must be (height, width) > 0, or 0x0 = auto; got {self.size}")

    def size_or(self, default: tuple[int, int] = (256, 256)) -> tuple[int, int]:
        """``size``, or ``default`` while it is 0x0 (not decided yet)."""
        return default if tuple(self.size) == (0, 0) else (int(self.size[0]), int(self.size[1]))


@dataclass
class AugmentConfig(_Config):
    """Joint image + mask augmentation, run on whole batches on the training device.

    ``affine``, ``elastic`` and ``blur`` are per-image probabilities; ``rotate_deg``, ``scale``
    and ``shift`` (a fraction of the size) bound the affine transform; ``elastic_sigma`` is the
    std in pixels of the paper's coarse ``elastic_grid`` x ``elastic_grid`` displacements;
    ``brightness``, ``contrast``, ``gamma`` and ``noise`` are strengths (0 turns one off).
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
    gamma: float = 0.1
    noise: float = 0.02
    blur: float = 0.1

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every augmentation off (``unetkit train --no-augment``)."""
        return cls(flip=False, rot90=False, affine=0.0, elastic=0.0, brightness=0.0,
                   contrast=0.0, gamma=0.0, noise=0.0, blur=0.0)  # fmt: skip


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
            (``unetkit.objects.stars``).
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
            1-pixel ripples on its ridges that h-maxima would take for peaks.
        distance_weight: ``distance`` head: the distance term's factor in the loss, beside the
            class loss (``unetkit.train.losses.DistanceHeadLoss``); large enough that the
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
            loss (``unetkit.train.losses.RaysHeadLoss``). 1.0 keeps StarDist's balance of
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
    min_size: int | None = None
    min_score: float = 0.8
    fill_holes: bool = True

    def __post_init__(self) -> None:
        _check_choice("head", self.head, INSTANCE_HEADS)
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
        _check_range("prob_thresh", self.prob_thresh, 0.0, 1.0)
        _check_range("nms_thresh", self.nms_thresh, 0.0, 1.0, closed=True)
        _check_range("min_score", self.min_score, 0.0, 1.0, closed=True)
        if self.min_size is not None:
            _check_min(self, ("min_size",), 0)


@dataclass
class TrainConfig(_Config):
    """Everything ``unetkit train`` needs; saved in RUN_DIR and in every checkpoint.

    ``model`` None means "the preset's config" (channels and classes filled in from the data).
    ``preset`` ``auto``, ``batch_size`` 0 and ``data.size`` 0x0 are decided by the auto recipe
    from the data fingerprint and the device when training starts (``unetkit.train.recipe``:
    the ``small`` preset's layers at width 16 on a CPU, 32 on a GPU; the median image size
    capped at 256 / 512 px; batch 4 on a CPU).
    ``task`` ``instance``: touching objects apart, from ``instances/`` label images (K classes
    plus a boundary class; ``objects`` holds the target and post-processing settings).
    ``weight_map`` None: the paper's border weight map for ``instance`` (from the real
    instances, so the pixels between touching objects weigh most), off otherwise.
    ``task``/``loss`` ``auto``: multi-class softmax + CE + Dice, binary sigmoid + BCE + Dice for
    sigmoid-head presets with 2 classes, image-to-image MSE for ``restore`` / ``x3``.
    ``epochs`` None: with a ``time_budget`` (minutes) the budget decides the length (and the
    LR schedule anneals over it), without one 50 epochs. ``val_every`` 0: validate the first
    epoch, the last, and in between whenever training has run 4x as long as the previous
    validation took. ``save_every`` N: write ``last.pt`` every N epochs; 0 (auto): after
    every epoch unless the previous write was so recent that writing would take more than 2 %
    of the time (the budget goes to training), and always at the end. ``ema``: decay of an
    exponential moving average of the weights (0 = off) that validation scores and
    checkpoints hold for prediction (``best.pt`` and ``last.pt``; ``last.pt`` also keeps the
    raw weights for ``--resume``).
    ``workers`` -1 (auto): data-loading processes, 0 on a CPU (the training step needs every
    core) and ``min(8, CPUs per GPU - 1)`` on a GPU, which loading in the training process
    would leave waiting on the host; they live for the whole run, and the batches do not
    depend on their number.
    """

    dataset: str = ""
    run_dir: str = ""
    preset: str = "auto"
    model: ModelConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    classes: tuple[str, ...] | None = None
    task: str = "auto"
    loss: str = "auto"
    class_weights: tuple[float, ...] | str | None = None
    weight_map: bool | None = None
    weight_map_objects: str = "foreground"
    w0: float = 10.0
    sigma: float = 5.0
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    epochs: int | None = None
    batch_size: int = 0
    steps_per_epoch: int = 0
    accumulate: int = 1
    clip_grad: float = 0.0
    ema: float = 0.99
    early_stop: int = 0
    val_fraction: float = 0.2
    val_stems: tuple[str, ...] | None = None
    val_every: int = 0
    save_every: int = 0
    best_metric: str = "mean_iou"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    workers: int = -1
    seed: int = 0
    deterministic: bool = False
    time_budget: float = 0.0
    sync_bn: bool = False
    tensorboard: bool = False
    panels: int = 4

    @property
    def max_epochs(self) -> int:
        """``epochs`` when given; else the time budget decides (no epoch cap), else 50."""
        if self.epochs is not None:
            return int(self.epochs)
        return 10**9 if self.time_budget > 0 else DEFAULT_EPOCHS

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.epochs is not None:
            _check_min(self, ("epochs",), 1)
        _check_min(self, ("accumulate",), 1)
        _check_min(self, ("save_every",), 0)
        _check_min(self, ("batch_size",), 0)
        _check_min(self, ("val_every",), 0)
        _check_min(self, ("lr", "sigma"), 0, strict=True)
        _check_min(self, ("weight_decay", "warmup_epochs", "clip_grad", "time_budget", "w0"), 0)
        _check_min(self, ("steps_per_epoch", "early_stop", "panels"), 0)
        _check_min(self, ("workers",), -1)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("ema", self.ema, 0.0, 1.0)
        _check_range("val_fraction", self.val_fraction, 0.0, 1.0)
        weights = self.class_weights
        if not (
            weights is None
            or weights == "balanced"
            or (isinstance(weights, tuple) and all(w >= 0 for w in weights))
        ):
            raise ValueError(f"class_weights must be 'balanced' or numbers >= 0; got {weights!r}")
        objects = self.weight_map_objects
        if not (objects == "foreground" or (isinstance(objects, str) and objects.isdigit())):
            raise ValueError(
                f"weight_map_objects must be 'foreground' or a class index; got {objects!r}"
            )


@dataclass
class PredictConfig(_Config):
    """How ``unetkit predict`` turns an image of any size into a mask.

    ``tile`` None and ``batch_size`` 0 are chosen from the network's width, the device and
    the memory (``unetkit.infer.tiling.auto_tiling``: up to 640 px tiles one at a time on a
    CPU, up to 1024 px batched on a GPU). Same-padding networks discard ``context`` pixels
    (``2**(depth + 1)``) at each inner tile border, so tiles need no ``overlap`` (0) to agree
    with the whole-image prediction on >= 99.9 % of pixels; an overlap blends neighbours
    (``blend``) where they share kept pixels. Valid-padding networks (the paper's
    overlap-tile) are exact and ignore ``overlap``.

    ``fg_threshold``, ``seed_threshold``, ``min_size``, ``min_score``, ``fill_holes``,
    ``prob_thresh`` and ``nms_thresh`` override the post-processing stored in an instance
    model (``ObjectConfig``); None keeps the model's.

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
    objects_between: str | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("blend", self.blend, BLENDS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_range("overlap", self.overlap, 0.0, 1.0)
        _check_range("threshold", self.threshold, 0.0, 1.0, closed=True)
        _check_min(self, ("batch_size", "min_area"), 0)
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < 1):
            raise ValueError(f"tile must be (height, width) >= 1; got {self.tile}")
        self.object_overrides()  # validated like the model's own settings

    def object_overrides(self, base: ObjectConfig | None = None) -> ObjectConfig:
        """``base`` (an instance model's post-processing) with this config's overrides."""
        names = ("fg_threshold", "seed_threshold", "min_size", "min_score", "fill_holes",
                 "prob_thresh", "nms_thresh")  # fmt: skip
        changes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return (base or ObjectConfig()).replace(**changes)
