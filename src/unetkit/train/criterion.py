"""The loss a run trains with, from its resolved config: the class loss (``build_loss``) with
its class weights, the per-pixel weight map the dataset applies, and the instance heads'
wrappers (distance, rays, offsets)."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..errors import UnetkitError
from .head_losses import DistanceHeadLoss, OffsetsHeadLoss, RaysHeadLoss
from .losses import build_loss, inverse_frequency_weights
from .plan import boundary_head, network_classes


def build_criterion(cfg: TrainConfig, info, device: torch.device) -> torch.nn.Module:
    """The training loss of a resolved config on ``device``: ``cfg.loss`` over the network's
    classes, weighted by :func:`class_weights`, wrapped for the distance, rays or offsets head."""
    cw = class_weights(cfg, info)
    loss = build_loss(
        cfg.loss,
        "multiclass" if cfg.task == "instance" else cfg.task,
        network_classes(cfg),
        info.ignore_index,
        cw.to(device) if cw is not None else None,
    )
    objects = cfg.objects
    if cfg.task == "instance" and objects.head == "distance":
        return DistanceHeadLoss(loss, info.ignore_index, objects.distance_weight)
    if cfg.task == "instance" and objects.head == "offsets":
        return OffsetsHeadLoss(loss, info.ignore_index, objects.offsets_weight)
    if cfg.task == "instance" and objects.head == "rays":
        assert objects.ray_scale is not None  # chosen by plan_from_fingerprint
        return RaysHeadLoss(
            loss, info.ignore_index, objects.distance_weight, objects.rays_weight,
            objects.ray_scale,
        )  # fmt: skip
    return loss


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
                target,
                instances,
                boundary,
                w0=cfg.w0,
                sigma=cfg.sigma,
                ignore_index=info.ignore_index,
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
        return inverse_frequency_weights(info.class_share)
    if isinstance(cw, str):
        raise UnetkitError(f"class_weights must be 'balanced' or numbers; got {cw!r}")
    if len(cw) != network_classes(cfg):
        extra = " (the data's and boundary)" if boundary_head(cfg) else ""
        raise UnetkitError(f"{len(cw)} class weights for {network_classes(cfg)} classes{extra}")
    return torch.tensor(cw, dtype=torch.float32)
