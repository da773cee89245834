"""Validation during training: the weights being trained scored through the very prediction
code path of ``unetkit predict`` and ``evaluate`` (``unetkit.infer.Predictor``), so that
``best.pt`` is chosen on the metric ``evaluate`` reports; image-to-image runs by their loss;
and, when training ends, the rays head's thresholds chosen on the validation images.

``train/`` sits above ``infer/`` for this (``infer/`` never imports ``train/``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig, PredictConfig, TrainConfig
from ..data.normalize import image_to_tensor
from ..device import autocast
from ..distributed import DistInfo, all_mean
from ..files import write_text
from ..metrics import ConfusionMatrix
from . import artifacts
from .loop import StepContext
from .plan import is_regression

log = logging.getLogger(__name__)


def whole_images(data: DataConfig) -> DataConfig:
    """The validation images' preprocessing: whole images where training takes random crops
    (a resized model is validated resized, as ``predict`` runs it)."""
    return data.replace(resize="none") if data.resize == "random-crop" else data


@torch.inference_mode()
def validate_regression(
    model, net, loss_fn, dataset, ctx: StepContext, *, indices: list[int]
) -> dict:
    """An image-to-image run's validation: the mean loss of ``net`` (the unwrapped UNet; its
    ``forward_any`` pads any size to a legal one) over the whole images at ``indices``, the
    input shrunk by ``ctx.input_scale`` (x3 super-resolution). ``model`` is put in eval mode
    for the pass (its BatchNorm statistics)."""
    model.eval()
    losses = []
    for i in indices:
        image = dataset[i]["image"][None].to(ctx.device)  # (1, C, H, W)
        if ctx.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        inputs = (
            image
            if ctx.input_scale == 1
            else F.interpolate(image, scale_factor=1 / ctx.input_scale, mode="area")
        )
        with autocast(ctx.device, ctx.precision):
            out = net.forward_any(inputs)  # x3: 3 * floor(H / 3) may be < H
        target = image[..., : out.shape[-2], : out.shape[-1]]
        losses.append(float(loss_fn(out.float(), target)))
    model.train()
    return {"val_loss": float(np.mean(losses)) if losses else float("nan")}


@torch.inference_mode()
def validate_with_predictor(
    predictor,
    dataset,
    num_classes: int,
    ignore_index: int,
    class_names: list[str],
    *,
    indices: list[int],
    device: torch.device,
    panel_indices: Iterable[int] = (),
    on_panel: Callable[[int, dict, np.ndarray], None] | None = None,
) -> dict:
    """Whole-image validation through the prediction path that ``evaluate`` uses.

    Each validation image is predicted whole by ``predictor`` (an ``unetkit.infer.Predictor``
    around the weights being trained: the same normalisation, tiling, blending and threshold
    as ``unetkit predict`` / ``evaluate``), so ``best.pt`` is chosen on the metric that
    ``evaluate`` reports. The confusion matrix is exact and summed over ranks. ``val_loss`` is
    the mean negative log-likelihood of the true class under the predicted probabilities (for
    instance models the object classes share ``1 - p(background)`` in proportion to their
    interior probabilities: the boundary is part of the object).
    """
    panel_indices = set(panel_indices)
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    nll, counted = 0.0, 0
    for i in indices:
        image, mask = dataset.raw(dataset.stems[i])
        probs = torch.from_numpy(predictor.predict_proba(image))  # (K, H, W)
        pred = torch.from_numpy(predictor.probs_to_mask(probs).astype(np.int64))
        probs = probs[: num_classes + 1]  # a rays head's ray lengths are no probabilities
        if probs.shape[0] == num_classes + 1:  # instance model: boundary is object, folded in
            objects = probs[1:num_classes]
            share = objects / objects.sum(0, keepdim=True).clamp_min(1e-7)
            probs = torch.cat([probs[:1], share * (1 - probs[:1])])
        target = torch.from_numpy(np.asarray(mask, dtype=np.int64))
        cm.update(pred.to(device), target.to(device))
        valid = (target >= 0) & (target < probs.shape[0])
        if valid.any():
            p_true = probs.gather(0, target.clamp(0, probs.shape[0] - 1)[None])[0][valid]
            nll += float(-torch.log(p_true.clamp_min(1e-7)).sum())
            counted += int(valid.sum())
        if on_panel is not None and i in panel_indices:  # the whole image, as predicted
            tensor = image_to_tensor(image, dataset.config)
            on_panel(i, {"image": tensor, "mask": target}, pred.numpy())
    cm.reduce_from_all_processes()
    metrics = cm.compute(class_names)
    metrics["val_loss"] = nll / counted if counted else float("nan")
    return metrics


class Validator:
    """One run's validation set, scored each time validation is due; this rank scores its
    share of the images, the metrics are of all of them."""

    def __init__(
        self, cfg: TrainConfig, info, val_set, run_dir: Path, dist: DistInfo,
        device: torch.device, precision: str,
    ) -> None:  # fmt: skip
        self.cfg, self.info, self.val_set, self.run_dir = cfg, info, val_set, run_dir
        self.dist, self.device, self.precision = dist, device, precision

    def predictor(self, net):
        """``net`` as an ``unetkit.infer.Predictor`` with default settings: the very code path
        of ``unetkit predict`` and ``evaluate``."""
        from ..card import ModelCard
        from ..infer.backends import torch_network
        from ..infer.predict import Predictor

        cfg = self.cfg
        assert cfg.model is not None and cfg.classes is not None  # a resolved config
        card = ModelCard(
            model_config=cfg.model,
            classes=list(cfg.classes),
            palette=self.info.palette,
            preprocessing=cfg.data,
            task=cfg.task,
            ignore_index=self.info.ignore_index,
            objects=cfg.objects.to_dict(),
            source=str(self.run_dir),
        )
        network = torch_network(net, card, self.device, self.precision)
        return Predictor(network, PredictConfig(device=str(self.device), precision=self.precision))

    def score(
        self, epoch: int, eval_net, train_model, loss_fn, ctx: StepContext, averaged: bool
    ) -> dict:
        """The epoch's validation row (``val_loss``, the confusion matrix's scalars and
        ``iou_<class>``) of ``eval_net`` (the weights validated: the moving average when
        ``averaged``); panels of the first ``cfg.panels`` images into ``panels/``."""
        cfg = self.cfg
        assert cfg.classes is not None  # a resolved config
        indices = list(range(len(self.val_set)))[self.dist.rank :: self.dist.world_size]
        panels = list(range(min(cfg.panels, len(self.val_set)))) if self.dist.is_main else []
        images = []

        def on_panel(i, item, pred):
            images.append(artifacts.panel_row(item, pred, self.info, cfg.data))

        if is_regression(cfg):
            model = eval_net if averaged else train_model
            metrics = validate_regression(model, eval_net, loss_fn, self.val_set, ctx,
                                          indices=indices)  # fmt: skip
        else:
            train_model.eval()  # (its BatchNorm statistics are the ones being averaged)
            metrics = validate_with_predictor(
                self.predictor(eval_net),
                self.val_set,
                len(cfg.classes),
                self.info.ignore_index,
                list(cfg.classes),
                indices=indices,
                device=self.device,
                panel_indices=panels,
                on_panel=on_panel,
            )
            train_model.train()
        metrics["val_loss"] = all_mean(metrics["val_loss"], self.dist, self.device)
        if images and self.dist.is_main:
            artifacts.write_panels(self.run_dir / "panels" / f"epoch_{epoch:04d}.png", images)
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if "per_class" in metrics:
            for name, vals in metrics["per_class"].items():
                if vals.get("iou") is not None:
                    flat[f"iou_{name}"] = vals["iou"]
        return flat

    def choose_rays_thresholds(
        self, cfg: TrainConfig, val_stems: list[str], val_regions: dict
    ) -> TrainConfig:
        """The rays head's ``prob_thresh`` / ``nms_thresh`` / ``min_score``: those with which
        best.pt's objects score best on the validation images, or bands
        (``unetkit.objects.thresholds``, as StarDist's ``optimize_thresholds``), logged and
        written into best.pt, last.pt and config.json; returns ``cfg`` with them."""
        from ..checkpoint import load_checkpoint, save_checkpoint
        from ..data.instances import read_instances
        from ..infer.predict import Predictor
        from ..objects.thresholds import choose_star_thresholds

        best = self.run_dir / "best.pt"
        # whole validation images, or each image's held-out band (``val_regions``)
        boxes = {s: val_regions.get(s) for s in val_stems or val_regions}
        if not boxes or not best.is_file():
            return cfg
        predictor = Predictor.from_checkpoint(
            best, PredictConfig(device=str(self.device), precision=self.precision)
        )

        def window(array: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
            """The last two axes of ``array`` inside ``box`` (all of it for None)."""
            return array if box is None else array[..., box[0] : box[1], box[2] : box[3]]

        samples = (  # the whole image predicted, as it will be, then scored in its band
            (window(predictor.predict_proba(self.val_set.raw(stem)[0]), box),
             window(read_instances(self.info.instance_files[stem]), box))
            for stem, box in boxes.items()
        )  # fmt: skip
        before = predictor.objects_config
        chosen, table = choose_star_thresholds(samples, before)
        key = (chosen.prob_thresh, chosen.nms_thresh, chosen.min_score)
        configured = (before.prob_thresh, before.nms_thresh, before.min_score)
        log.info("objects: prob_thresh %.2f, nms_thresh %.2f, min_score %.1f: the best DSB mean "
                 "AP on the %d validation %s, %s (at %.2f, %.2f, %.1f: %s)", *key, len(boxes),
                 "images" if val_stems else "bands", _object_scores(table[key]),
                 *configured, _object_scores(table.get(configured)))  # fmt: skip
        thresholds = dict(zip(("prob_thresh", "nms_thresh", "min_score"), key, strict=True))
        cfg = cfg.replace(objects=cfg.objects.replace(**thresholds))
        for name in ("best.pt", "last.pt"):
            path = self.run_dir / name
            if not path.is_file():
                continue
            ckpt = load_checkpoint(path)
            ckpt.extra["objects"] = {**ckpt.extra.get("objects", {}), **thresholds}
            stored = (ckpt.train_state or {}).get("config")
            if isinstance(stored, dict) and isinstance(stored.get("objects"), dict):
                stored["objects"].update(thresholds)  # what --resume reads
            save_checkpoint(ckpt, path)
        write_text(self.run_dir / "config.json", cfg.pretty() + "\n")
        return cfg


def _object_scores(summary: dict | None) -> str:
    """``mean AP 0.512, AP@0.5 0.734, 12 merges``, or ``-``."""
    if not summary:
        return "-"
    return (f"mean AP {summary.get('map') or 0:.3f}, AP@0.5 {summary.get('ap_50') or 0:.3f}, "
            f"{summary.get('merges', 0)} merges")  # fmt: skip
