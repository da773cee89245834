"""Where each setting of a run comes from, and why: one module for every training default.

A run's configuration is settled in this order, each decision with the line the run prints:

1. **the dataset** (:func:`resolve_config`): classes, channels, task, loss, output channels,
   the weight map; **the split** (:func:`split_stems`, :func:`validation_regions`,
   :func:`describe_split`);
2. **the fingerprint** of the training images (:func:`plan_from_fingerprint`): the
   normalisation, then **the recipe** (:func:`recipe`) from the fingerprint and the device,
   the epoch length, the objects' minimum size and the rays' scale.

Whether a run is image-to-image (``regression``: the images are their own targets) is
decided by :func:`is_regression`.

The recipe, for what is left to it (``DataConfig.size`` 0x0, ``TrainConfig.batch_size`` 0,
``TrainConfig.preset`` ``auto`` without an explicit model), as nnU-Net plans its
configuration from the dataset fingerprint and the GPU memory:

* **patch**: per axis the median training image size, capped at 256 px on a CPU and 512 px on
  a GPU, rounded down to a multiple of 2**depth (the U-Net pools it cleanly) and at least 4 x
  that (64 px at depth 4); images smaller than the patch are padded, never upsampled;
* **width** (``preset auto``: milesial's topology, the ``small`` preset's layers): base width
  16 on a CPU (1.9 M parameters: more steps in minutes of CPU time beat a wider network),
  32 on a GPU with at least 8 GiB (7.8 M);
* **batch**: 4 on a CPU; on a GPU 16 crops of 256 x 256 at width 32, scaled by the patch area
  (fewer for larger crops), between 2 and 64.

The time budget is not an input: it decides the length (the schedule anneals over it).

Small data sets (fewer than ``SMALL_SET`` = 40 images) change two things, each printed:

* **validation** (:func:`validates_on_regions`): no image is held out whole; a band of a
  fifth of each image's area is left out of training and validated on;
* **epoch length** (:func:`min_epoch_crops`): without a time budget or ``epochs`` the run
  is 50 epochs, and an epoch one crop per image: 8 images at batch 4 would train 100 steps.
  Such an epoch is made of at least 40 crops (each image the same whole number of times,
  every crop drawn anew), as long as an epoch of a 40-image set; with a time budget the
  budget decides the length and the epoch is left alone.

Fewer than 24 images also widen the gamma augmentation (:func:`augment_gamma`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DataConfig, TrainConfig
from ..config.data import GAMMA, SMALL_SET_GAMMA, SMALL_SET_GAMMA_IMAGES
from ..data.fingerprint import choose_normalization, compute_fingerprint
from ..data.split import SMALL_SET, Box, bands_not_images, held_out_box, image_kind, stratified_val
from ..errors import UnetkitError
from ..models.presets import PRESETS, preset_config

log = logging.getLogger(__name__)

REGRESSION_PRESETS = ("restore", "x3")
CPU_PATCH, GPU_PATCH = 256, 512
MIN_EPOCH_CROPS = SMALL_SET  # an epoch of a small set, default length: as long as of 40 images
GPU_MEMORY_FOR_WIDE = 8 * 2**30


def is_regression(cfg: TrainConfig) -> bool:
    """An image-to-image run (the images are their own targets): ``task regression``, or
    ``task auto`` with a restoration preset (``restore``, ``x3``)."""
    return cfg.task == "regression" or (cfg.task == "auto" and cfg.preset in REGRESSION_PRESETS)


def dataset_info(cfg: TrainConfig):
    """The dataset folder of ``cfg``: images alone for an image-to-image run, else images with
    their masks (``DatasetInfo``)."""
    from ..data.layout import describe_dataset, describe_images

    assert cfg.dataset is not None
    return (describe_images if is_regression(cfg) else describe_dataset)(cfg.dataset)


# -- what the dataset decides --------------------------------------------------------------
def resolve_config(cfg: TrainConfig, info) -> TrainConfig:
    """Fill in what the dataset decides: channels, classes, task, loss and the model config
    (instance models have K + 1 output channels: the data's K classes and the boundary class
    or the distance channel, then the rays head's ``n_rays`` rays or the offsets head's 2)."""
    if cfg.preset not in PRESETS and cfg.preset != "auto" and cfg.model is None:
        raise UnetkitError(
            f"unknown preset {cfg.preset!r}; valid presets: auto, {', '.join(PRESETS)}"
        )
    classes = tuple(cfg.classes or info.classes)
    if cfg.classes and len(cfg.classes) != len(info.classes):
        raise UnetkitError(
            f"{info.root}: {len(info.classes)} classes in the data "
            f"({', '.join(info.classes)}) but {len(cfg.classes)} configured"
        )
    task = cfg.task
    base = cfg.model or preset_config(cfg.preset)
    if task == "auto":
        if is_regression(cfg):
            task = "regression"
        elif base.head == "sigmoid" and len(classes) == 2:
            task = "binary"
        else:
            task = "multiclass"
    if task == "binary" and len(classes) != 2:
        raise UnetkitError(
            f"--task binary needs 2 classes (background + 1); the data has "
            f"{len(classes)}: {', '.join(classes)}"
        )
    if task == "instance":
        _check_instances(info, len(classes))
        head = cfg.objects.head
        if head in ("rays", "offsets") and cfg.data.resize in ("letterbox", "resize"):
            raise UnetkitError(
                f"--instance-head {head} trains on whole images or random crops (--resize none "
                f"or random-crop), not --resize {cfg.data.resize}: resizing distorts the "
                "objects its targets measure"
            )
    loss = cfg.loss
    if loss == "auto":
        loss = {"binary": "bce+dice", "regression": "mse"}.get(task, "ce+dice")
    channels = info.channels if cfg.data.channels in (0, None) else cfg.data.channels
    extra = {"rays": cfg.objects.n_rays, "offsets": 2}.get(cfg.objects.head, 0)
    out = {"binary": 1, "regression": channels, "instance": len(classes) + 1 + extra}.get(
        task, len(classes)
    )
    head = {"multiclass": "logits", "binary": "sigmoid", "instance": "logits"}.get(task, base.head)
    model = base.replace(in_channels=channels, out_channels=out, head=head)
    data = cfg.data.replace(channels=channels, ignore_index=info.ignore_index)
    mean, std = data.mean, data.std
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise UnetkitError(f"mean/std need 1 or {channels} values; got {mean} / {std}")
    best = cfg.best_metric
    if task == "regression" and best == TrainConfig.best_metric:
        best = "val_loss"  # no classes to score: keep the weights with the lowest loss
    weight_map = (task == "instance") if cfg.weight_map is None else cfg.weight_map
    return cfg.replace(
        task=task, loss=loss, model=model, data=data, classes=classes, best_metric=best,
        weight_map=weight_map,
    )  # fmt: skip


def _check_instances(info, num_classes: int) -> None:
    """``--task instance`` needs an instance label image (``instances/``) for every image."""
    missing = [s for s in info.stems if s not in info.instance_files]
    if missing:
        have = f"only {len(info.instance_files)} of {len(info.stems)} images have one"
        raise UnetkitError(
            f"{info.root}: --task instance needs instance labels in instances/ ({have}; "
            f"missing e.g. {', '.join(missing[:3])})"
        )
    if num_classes < 2:
        raise UnetkitError(f"{info.root}: --task instance needs background + object classes")


def network_classes(cfg: TrainConfig) -> int:
    """Classes the softmax and the class loss see: the data's, plus ``boundary`` for the
    ``boundary`` instance head (the ``distance`` head's extra channel is not a class)."""
    assert cfg.classes is not None  # a resolved config
    return len(cfg.classes) + (1 if boundary_head(cfg) else 0)


def network_class_names(cfg: TrainConfig) -> list[str]:
    """The names of the :func:`network_classes`."""
    assert cfg.classes is not None  # a resolved config
    return list(cfg.classes) + (["boundary"] if boundary_head(cfg) else [])


def boundary_head(cfg: TrainConfig) -> bool:
    """An instance task whose extra softmax class is the object boundary (boundary, offsets)."""
    return cfg.task == "instance" and cfg.objects.head in ("boundary", "offsets")


# -- the split -----------------------------------------------------------------------------
def _dataset_split(info, cfg: TrainConfig) -> bool:
    """The dataset's own split decides (``dataset.json`` / VOC lists with validation images,
    and ``val_fraction`` left at its default)."""
    return bool(info.split and info.split.get("val")) and (
        cfg.val_fraction == TrainConfig.val_fraction
    )


def validates_on_regions(info, cfg: TrainConfig) -> bool:
    """The small-set rule: fewer than ``SMALL_SET`` images, a segmentation task, and the split
    left to the defaults (no ``val_stems``, no dataset split, the default ``val_fraction``):
    every image trains and a band of each (``held_out_box``) is validated on."""
    return (
        not cfg.val_stems
        and not _dataset_split(info, cfg)
        and not is_regression(cfg)
        and bands_not_images(len(info.stems), cfg.val_fraction)
    )


def split_stems(info, cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(train, val) stems: ``val_stems``, else the dataset's own split, else ``val_fraction``
    of the images stratified by size (:func:`stratified_val`); no image at all under the
    small-set rule (:func:`validates_on_regions`: held-out regions instead)."""
    stems = list(info.stems)
    if cfg.val_stems:
        missing = sorted(set(cfg.val_stems) - set(stems))
        if missing:
            raise UnetkitError(f"{info.root}: --val-stems not in the dataset: {', '.join(missing)}")
        val = [s for s in stems if s in set(cfg.val_stems)]
    elif _dataset_split(info, cfg):
        val = [s for s in stems if s in set(info.split["val"])]
    elif validates_on_regions(info, cfg):
        val = []
    elif cfg.val_fraction > 0 and len(stems) > 1:
        kinds = {s: image_kind(info.image_files[s]) for s in stems}
        val = stratified_val(stems, kinds, cfg.val_fraction, cfg.seed)
    else:
        val = []
    train = [s for s in stems if s not in set(val)]
    if not train:
        raise UnetkitError(f"{info.root}: no training images left after the validation split")
    return train, val


def validation_regions(info, cfg: TrainConfig) -> dict[str, Box]:
    """The held-out band of each image (``held_out_box``: ``val_fraction`` of its area) under
    the small-set rule, else none."""
    if not validates_on_regions(info, cfg):
        return {}
    from ..data.imageio import read_image

    boxes = {}
    for stem in info.stems:
        height, width = read_image(info.image_files[stem]).shape[:2]
        box = held_out_box(height, width, cfg.val_fraction)
        if box is not None:
            boxes[stem] = box
    return boxes


def describe_split(
    info, cfg: TrainConfig, train: list[str], val: list[str], regions: dict[str, Box]
) -> str:
    """What validation scores and why, in one line for the start of training."""
    n = len(train) + len(val)
    if regions:
        whole = max(1, round(cfg.val_fraction * n))
        return (
            f"validation on held-out regions: {n} images are fewer than {SMALL_SET}, so none "
            f"is held out whole (a fifth would take {whole} of them, and in a mixed set the "
            f"only image of a kind); the labels of a band of {cfg.val_fraction:.0%} of each "
            "image (its right-hand columns, the bottom rows of a portrait image) are left out "
            "of training and scored instead (--val-stems, or a --val-fraction other than "
            f"{TrainConfig.val_fraction:g}, holds out whole images)"
        )
    if not val:
        why = "val_fraction 0" if cfg.val_fraction == 0 else f"{n} image(s)"
        return f"validation: none ({why})"
    if cfg.val_stems:
        return f"validation: the {len(val)} --val-stems images"
    if _dataset_split(info, cfg):
        return f"validation: the {len(val)} validation images of the dataset's own split"
    return (
        f"validation: {len(val)} of {n} images held out whole (val_fraction "
        f"{cfg.val_fraction:g}, stratified by size and background)"
    )


def run_split(info, cfg: TrainConfig, recorded: dict) -> tuple[list, list, dict[str, Box], str]:
    """(train stems, val stems, held-out regions, the line that says why): the split a resumed
    run recorded (``recorded``: its ``train_state["data"]``) when it covers the dataset's
    images, however the split rule has changed since; else :func:`split_stems`."""
    if set(recorded.get("train", [])) | set(recorded.get("val", [])) == set(info.stems):
        train, val = list(recorded["train"]), list(recorded["val"])
        boxes = recorded.get("val_regions") or {}
        regions = {s: (int(b[0]), int(b[1]), int(b[2]), int(b[3])) for s, b in boxes.items()}
    else:
        train, val = split_stems(info, cfg)
        regions = validation_regions(info, cfg) if not val else {}
    return train, val, regions, describe_split(info, cfg, train, val, regions)


# -- what the fingerprint and the device decide ----------------------------------------------
def _gpu_memory(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(device).total_memory)


def _legal(model, n: int) -> int:
    """The largest length <= ``n`` the model takes (valid-padding models shrink their input;
    pixel-shuffle models see ``n / scale``), else the smallest above."""
    if model is None:
        return n
    from ..models.unet import UNet

    with torch.device("meta"):
        net = UNet(model)
    scale = model.scale
    below, above = net.legal_sizes(n // scale)
    return int(below or above or n // scale) * scale


def recipe(
    cfg: TrainConfig, fingerprint: dict[str, Any], device: torch.device, width_auto: bool
) -> tuple[TrainConfig, str]:
    """Fill in what the auto recipe decides; returns the config and a one-line reason."""
    gpu = device.type == "cuda"
    wide = gpu and _gpu_memory(device) >= GPU_MEMORY_FOR_WIDE
    model = cfg.model
    said = []
    if width_auto and model is not None:
        model = model.replace(base_width=32 if wide else 16, widths=None)
        said.append(f"width {model.base_width} ({'GPU' if wide else 'CPU'})")
    data = cfg.data
    if tuple(data.size) == (0, 0):
        step = 2 ** (model.depth if model is not None else 4)
        cap = GPU_PATCH if gpu else CPU_PATCH
        median = fingerprint.get("size_median") or [cap, cap]
        side = [_legal(model, max(4 * step, (min(cap, int(n)) // step) * step)) for n in median]
        data = data.replace(size=(side[0], side[1]))
        said.append(f"patch {side[0]}x{side[1]} (median image {median[0]}x{median[1]}, cap {cap})")
    batch = cfg.batch_size
    if batch == 0:
        if gpu:
            area = data.size[0] * data.size[1]
            width = model.base_width if model is not None else 32
            batch = round(16 * (256 * 256) / area * (32 / max(width, 1)))
            batch = int(min(64, max(2, batch)))
        else:
            batch = 4
        said.append(f"batch {batch}")
    out = cfg.replace(model=model, data=data, batch_size=batch)
    return out, ("recipe auto: " + ", ".join(said)) if said else "recipe: as configured"


def augment_gamma(cfg: TrainConfig, images: int) -> tuple[TrainConfig, str | None]:
    """``augment.gamma`` None resolved (``SMALL_SET_GAMMA`` under ``SMALL_SET_GAMMA_IMAGES``
    images, else ``GAMMA``) and the line that says why; None where the config gave it."""
    if cfg.augment.gamma is not None:
        return cfg, None
    small = images < SMALL_SET_GAMMA_IMAGES and not is_regression(cfg)  # inputs = targets there
    gamma = SMALL_SET_GAMMA if small else GAMMA
    few = f", fewer than {SMALL_SET_GAMMA_IMAGES}: so few show few exposures" if small else ""
    said = f"augment gamma {gamma} (gamma {math.exp(-gamma):.2f}-{math.exp(gamma):.2f})"
    return cfg.replace(augment=cfg.augment.replace(gamma=gamma)), f"{said}: {images} images{few}"


def min_epoch_crops(cfg: TrainConfig, images: int) -> int:
    """The fewest crops an epoch is made of: ``MIN_EPOCH_CROPS`` for a data set of fewer
    than ``SMALL_SET`` images when the default length decides (no ``epochs``, no
    ``time_budget``, no ``steps_per_epoch``), else 0 (no floor)."""
    default_length = cfg.epochs is None and cfg.time_budget <= 0 and cfg.steps_per_epoch == 0
    return MIN_EPOCH_CROPS if default_length and images < SMALL_SET else 0


def normalization(cfg: TrainConfig, fingerprint: dict[str, Any]) -> tuple[DataConfig, str]:
    """``data.normalize: auto`` resolved from the fingerprint, and the line that says why."""
    data = cfg.data
    if data.normalize != "auto":
        return data, f"normalize {data.normalize} (as configured)"
    if is_regression(cfg):
        mode, why = "fixed", "image-to-image task: the images are their own targets"
    else:
        mode, why = choose_normalization(fingerprint)
    data = data.replace(normalize=mode)
    if mode == "dataset":
        pooled = fingerprint["pooled"]
        data = data.replace(mean=tuple(pooled["mean"]),
                            std=tuple(max(v, 1e-3) for v in pooled["std"]))  # fmt: skip
    return data, f"normalize {mode}: {why}"


@dataclass
class FingerprintPlan:
    """What the training images decide: the config, the fingerprint, the lines that say why
    (printed at the start of the run), the epoch's crop floor (0: one pass, recorded in the
    checkpoints when applied) and the steps per epoch."""

    config: TrainConfig
    fingerprint: dict[str, Any]
    reasons: str
    min_epoch_crops: int
    steps: int


def plan_from_fingerprint(
    cfg: TrainConfig, train_set, stems: list[str], device: torch.device, *, width_auto: bool,
    images: int, world_size: int, resumed_floor: int | None,
) -> FingerprintPlan:  # fmt: skip
    """Measure the training images (``stems`` of ``train_set``) and decide from them and the
    device what is left to decide; ``train_set`` is set to the plan's crops.

    Args:
        cfg: the config resolved against the dataset (:func:`resolve_config`).
        width_auto: the model's width is the recipe's (``preset auto``, no explicit model).
        images: the images of the dataset (the small-set rule counts them all).
        world_size: the ranks of the run (an epoch's steps are global batches).
        resumed_floor: a resumed run's recorded ``min_epoch_crops`` (it keeps its epoch,
            whatever length it is given now); None for a fresh run.
    """
    k = 0 if is_regression(cfg) else network_classes(cfg)
    fingerprint = compute_fingerprint(((s, *train_set.raw(s)) for s in stems), k)
    data, norm_reason = normalization(cfg, fingerprint)
    planned, recipe_reason = recipe(cfg.replace(data=data), fingerprint, device, width_auto)
    planned, gamma_reason = augment_gamma(planned, images)
    recipe_reason += f"\n{gamma_reason}" if gamma_reason else ""
    data = planned.data
    train_set.config = data
    crops = train_set.plan_crops()  # DataConfig.sampling, now that the patch is known
    floor = min_epoch_crops(planned, images) if resumed_floor is None else resumed_floor
    one_pass = len(train_set)
    floor = floor if one_pass < floor else 0
    if floor:  # the default length on a small set: longer epochs
        train_set.plan_crops(floor)
        batches = -(-one_pass // (planned.batch_size * world_size))
        epochs = planned.max_epochs
        recipe_reason += (
            f"\nepoch {len(train_set)} crops, {len(train_set) // one_pass}x each "
            f"image's: a pass over the {len(crops)} images is {one_pass} crop(s), fewer "
            f"than {floor}; {epochs} epochs of {batches} step(s) would train only "
            f"{epochs * batches} steps"
        )
    if data.sampling == "area" and len(train_set) != len(crops):
        log.info("sampling area: %d crops per epoch from %d images (1 to %d per image)",
                 len(train_set), len(crops), max(crops.values()))  # fmt: skip
    n_global = planned.batch_size * world_size
    steps = cfg.steps_per_epoch or max(1, -(-len(train_set) // n_global))
    if cfg.task == "instance" and cfg.objects.min_size is None:
        areas = np.concatenate([np.zeros(0), *train_set.object_areas.values()])
        p10 = float(np.percentile(areas, 10)) if areas.size else 5.0
        planned = planned.replace(objects=cfg.objects.replace(min_size=max(1, round(p10 / 5))))
        log.info("objects: min_size %d px (a fifth of the 10th percentile of %d training "
                 "objects' areas)", planned.objects.min_size, areas.size)  # fmt: skip
    if cfg.task == "instance" and cfg.objects.head == "rays":
        planned = _plan_rays(planned, train_set.ray_lengths)
    train_set.config = data
    return FingerprintPlan(planned, fingerprint, f"{norm_reason}\n{recipe_reason}", floor, steps)


def _plan_rays(cfg: TrainConfig, ray_lengths: dict[str, tuple[float, int]]) -> TrainConfig:
    """The rays head's ``ray_scale`` when not given: the mean ray length over the training
    objects' pixels (the unit of the network's ray outputs), logged with its reason."""
    objects, why = cfg.objects, "as configured"
    total, count = (sum(pair[i] for pair in ray_lengths.values()) for i in (0, 1))
    if objects.ray_scale is None:
        objects = objects.replace(ray_scale=round(total / count, 2) if count and total > 0 else 1.0)
        cfg = cfg.replace(objects=objects)
        why = f"the mean ray length over the {count // objects.n_rays} training object pixels"
    log.info("objects: rays head, %d rays (StarDist's default 32 unless --n-rays), ray "
             "scale %.2f px (%s; the network predicts rays in that unit)",
             objects.n_rays, objects.ray_scale, why)  # fmt: skip
    return cfg
