"""One training epoch and one validation pass: explicit arguments, no globals."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.normalize import image_to_tensor
from ..device import autocast
from ..errors import UnetkitError
from ..metrics import ConfusionMatrix
from ..progress import progress


@dataclass
class StepContext:
    """What a training step needs besides the model and the batch."""

    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    channels_last: bool
    task: str
    accumulate: int = 1
    clip_grad: float = 0.0
    input_scale: int = 1  # x3 super-resolution: the network sees the patch shrunk by 3


def center_crop(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop the last two dims to ``size`` (valid-padding outputs are smaller)."""
    h, w = t.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return t[..., top : top + size[0], left : left + size[1]]


def prepare_batch(
    batch: dict, ctx: StepContext, augment: Callable | None, generator: torch.Generator | None
):
    """Move a batch to the device, augment it there, and build (input, target, weight).

    A batch with a ``distance`` map (the ``distance`` instance head) gets the target
    (B, 2, H, W) float32: the class index (the ignore index included) and the distance, which
    the augmentation moves with the pixels (``Augmenter.with_maps``). A batch with ``rays``
    too (the ``rays`` head, (B, H, W, R)) gets (B, 2 + R, H, W), channels last in memory:
    class, distance and the R ray lengths, which the augmentation turns with the objects
    (``Augmenter.with_rays``).
    """
    images = batch["image"].to(ctx.device, non_blocking=True)  # (B, C, H, W)
    masks = batch["mask"].to(ctx.device, non_blocking=True)  # (B, H, W)
    weights = batch.get("weight")
    weights = weights.to(ctx.device, non_blocking=True) if weights is not None else None
    distance, rays = batch.get("distance"), batch.get("rays")
    if distance is not None:
        distance = distance.to(ctx.device, non_blocking=True)
        rays = None if rays is None else rays.to(ctx.device, non_blocking=True)
        if augment is not None:  # an ``Augmenter``: the maps move with the pixels
            images, masks, weights, distance, rays = augment.with_rays(  # type: ignore[attr-defined]
                images, masks, weights, distance, rays, generator=generator
            )
        assert distance is not None
        b, h, w = masks.shape
        target = torch.empty(b, h, w, 2 + (0 if rays is None else rays.shape[-1]),
                             device=masks.device)  # fmt: skip
        target[..., 0], target[..., 1] = masks, distance
        if rays is not None:
            target[..., 2:] = rays
        masks = target.permute(0, 3, 1, 2)  # (B, 2 [+ R], H, W), channels last in memory
    elif augment is not None:
        images, masks, weights = augment(images, masks, weights, generator=generator)
    if ctx.task == "regression":  # image-to-image: the clean patch is the target
        target = images
        inputs = (
            images
            if ctx.input_scale == 1
            else F.interpolate(images, scale_factor=1 / ctx.input_scale, mode="area")
        )
    else:
        inputs, target = images, masks
    if ctx.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, target, weights


def train_one_epoch(
    model,
    loss_fn,
    optimizer,
    scheduler,
    scaler,
    batches: Iterable[dict],
    ctx: StepContext,
    *,
    augment=None,
    generator=None,
    epoch: int = 0,
    total_steps: int = 0,
    start_step: int = 0,
    stop: Callable[[], bool] | None = None,
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    on_update: Callable[[], None] | None = None,
) -> dict:
    """Train over ``batches``; returns {"loss", "images", "seconds", "steps", "stopped"}.

    Raises ``UnetkitError`` naming epoch, step and the batch's files if the loss is not finite
    (the caller then writes no checkpoint).
    """
    model.train()
    total_loss, images, steps, stopped = 0.0, 0, 0, False
    start = time.perf_counter()
    bar = progress(
        total=total_steps,
        initial=start_step,
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not show_progress,
        dynamic_ncols=True,
        leave=False,
    )
    for i, batch in enumerate(batches, start=start_step):
        inputs, target, weight = prepare_batch(batch, ctx, augment, generator)
        sync = (i + 1) % ctx.accumulate == 0 or i + 1 == total_steps
        no_sync = getattr(model, "no_sync", None)
        with no_sync() if no_sync is not None and not sync else contextlib.nullcontext():
            with autocast(ctx.device, ctx.precision):
                out = model(inputs)  # (B, K, h, w): smaller than the input for valid padding
            if ctx.task != "regression" and out.shape[-2:] != target.shape[-2:]:
                target = center_crop(target, out.shape[-2:])
                weight = center_crop(weight, out.shape[-2:]) if weight is not None else None
            loss = loss_fn(out.float(), target, weight)
            scaled = loss / ctx.accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UnetkitError(
                f"non-finite loss ({value}) at epoch {epoch}, step {i + 1}; batch "
                f"files: {', '.join(batch.get('stem', []))}"
            )
        if sync:
            _optimizer_step(model, optimizer, scaler, ctx.clip_grad)
            if on_update is not None:  # e.g. the moving average of the weights
                on_update()
            if scheduler is not None and not isinstance(
                scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
            ):
                scheduler.step()
        total_loss += value
        images += inputs.shape[0]
        steps += 1
        rate = images / max(1e-9, time.perf_counter() - start)
        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.1f}")
        bar.update(1)
        if on_step is not None:
            on_step(i + 1)
        # stop only after an optimizer step: partial accumulated gradients are not saved
        if sync and stop is not None and i + 1 < total_steps and stop():
            stopped = True
            break
    bar.close()
    return {
        "loss": total_loss / max(1, steps),
        "images": images,
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "stopped": stopped,
    }


def _optimizer_step(model, optimizer, scaler, clip_grad: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def predict_classes(net, logits: torch.Tensor, task: str, threshold: float = 0.5) -> torch.Tensor:
    """Class map (B, H, W) from raw outputs: argmax, or a sigmoid threshold for binary tasks."""
    if task == "binary" or logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0].float()) > threshold).long()
    return logits.argmax(1)


@torch.inference_mode()
def validate(
    model,
    net,
    loss_fn,
    dataset,
    ctx: StepContext,
    num_classes: int,
    ignore_index: int,
    class_names: list[str],
    *,
    indices: list[int],
    panel_indices: Iterable[int] = (),
    on_panel: Callable[[int, dict, np.ndarray], None] | None = None,
) -> dict:
    """Whole-image validation: exact confusion matrix (all-reduced across ranks) and loss.

    ``net`` is the unwrapped UNet (its ``forward_any`` pads any size to a legal one).
    Returns the metrics dict of ``ConfusionMatrix.compute`` plus ``val_loss``.
    """
    model.eval()
    panel_indices = set(panel_indices)
    cm = ConfusionMatrix(num_classes, ignore_index, device=ctx.device)
    losses = []
    for i in indices:
        item = dataset[i]
        image = item["image"][None].to(ctx.device)  # (1, C, H, W)
        mask = item["mask"][None].to(ctx.device)  # (1, H, W)
        if ctx.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if ctx.task == "regression":
            inputs = (
                image
                if ctx.input_scale == 1
                else F.interpolate(image, scale_factor=1 / ctx.input_scale, mode="area")
            )
            with autocast(ctx.device, ctx.precision):
                out = net.forward_any(inputs)  # x3: 3 * floor(H / 3) may be < H
            target = image[..., : out.shape[-2], : out.shape[-1]]
            losses.append(float(loss_fn(out.float(), target)))
            continue
        with autocast(ctx.device, ctx.precision):
            out = net.forward_any(image)  # (1, K, H, W)
        losses.append(float(loss_fn(out.float(), mask)))
        pred = predict_classes(net, out, ctx.task)
        cm.update(pred, mask)
        if on_panel is not None and i in panel_indices:
            on_panel(i, item, pred[0].cpu().numpy())
    model.train()
    if ctx.task == "regression":
        return {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    cm.reduce_from_all_processes()
    metrics = cm.compute(class_names)
    metrics["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return metrics


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
