"""Resolve a TrainConfig against its dataset: the train/val split, classes, task, loss, model
config, class weights and the weight map."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..data.split import SMALL_SET, Box, bands_not_images, held_out_box, image_kind, stratified_val
from ..errors import UnetkitError
from ..models.presets import PRESETS, preset_config

REGRESSION_PRESETS = ("restore", "x3")


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
        and cfg.task != "regression"
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


def resolve_config(cfg: TrainConfig, info) -> TrainConfig:
    """Fill in what the dataset decides: channels, classes, task, loss and the model config
    (instance models have K + 1 output channels: the data's K classes and the boundary class
    or the distance channel; the rays head adds ``n_rays`` ray channels)."""
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
        if cfg.preset in REGRESSION_PRESETS:
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
        if cfg.objects.head == "rays" and cfg.data.resize in ("letterbox", "resize"):
            raise UnetkitError(
                f"--instance-head rays trains on whole images or random crops (--resize none "
                f"or random-crop), not --resize {cfg.data.resize}: resizing distorts the "
                "objects its rays measure"
            )
    loss = cfg.loss
    if loss == "auto":
        loss = {"binary": "bce+dice", "regression": "mse"}.get(task, "ce+dice")
    channels = info.channels if cfg.data.channels in (0, None) else cfg.data.channels
    rays = cfg.objects.n_rays if cfg.objects.head == "rays" else 0
    out = {"binary": 1, "regression": channels, "instance": len(classes) + 1 + rays}.get(
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


def boundary_head(cfg: TrainConfig) -> bool:
    """An instance task whose extra softmax class is the object boundary."""
    return cfg.task == "instance" and cfg.objects.head == "boundary"


def weight_map_fn(cfg: TrainConfig, info):
    """The per-mask weight function for the dataset (the paper's map), or None."""
    if not cfg.weight_map:
        return None
    from .weightmap import border_weight_map

    given = cfg.weight_map_objects
    objects: int | str = int(given) if given.lstrip("-").isdigit() else given
    balance = "balanced" if cfg.class_weights == "balanced" else None
    if cfg.task == "instance":  # from the real objects, not from connected components
        from ..data.targets import instance_weight_map

        assert cfg.classes is not None  # a resolved config
        boundary = len(cfg.classes)

        def instance_weight_fn(target, instances):
            return instance_weight_map(
                target, instances, boundary, cfg.w0, cfg.sigma, info.ignore_index
            )

        return instance_weight_fn

    def weight_fn(mask):
        return border_weight_map(
            mask,
            cfg.w0,
            cfg.sigma,
            objects=objects,
            class_weights=balance,
            ignore_index=info.ignore_index,
        )

    return weight_fn


def class_weights(cfg: TrainConfig, info) -> torch.Tensor | None:
    """Per-class loss weights: given, ``balanced`` (inverse frequency), or None.

    With the weight map on, ``balanced`` is applied inside the map instead (not twice).
    """
    cw = cfg.class_weights
    if cw is None or (cw == "balanced" and cfg.weight_map):
        return None
    if cw == "balanced":
        if cfg.task == "instance":
            raise UnetkitError(
                "class weights 'balanced' are not available with --task instance (use the "
                "weight map, or give one weight per class and one for the boundary)"
            )
        if not info.class_share:
            raise UnetkitError(
                f"{info.root}: class weights 'balanced' need per-class pixel "
                "shares (dataset.json from `unetkit prepare`)"
            )
        from .losses import inverse_frequency_weights

        return inverse_frequency_weights(info.class_share)
    if isinstance(cw, str):
        raise UnetkitError(f"class_weights must be 'balanced' or numbers; got {cw!r}")
    if len(cw) != network_classes(cfg):
        extra = " (the data's and boundary)" if boundary_head(cfg) else ""
        raise UnetkitError(f"{len(cw)} class weights for {network_classes(cfg)} classes{extra}")
    return torch.tensor(cw, dtype=torch.float32)
