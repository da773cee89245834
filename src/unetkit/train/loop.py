"""One training epoch: explicit arguments, no globals (validation: ``validate.py``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..device import autocast
from ..errors import UnetkitError
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


class EpochSampler:
    """The current epoch's batches as ``(epoch, index)`` keys of the training set (set before
    each epoch), so that one ``DataLoader`` and its loading processes serve every epoch and
    each sample still gets its epoch's crop."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochLoader:
    """One ``DataLoader`` over the training set for the whole run, built at the first epoch
    (its loading processes start once, not once per epoch: an epoch can be a few steps on a
    GPU), fed each epoch's batches by an :class:`EpochSampler`."""

    def __init__(self, dataset, workers: int, pin_memory: bool) -> None:
        self.dataset, self.workers, self.pin_memory = dataset, workers, pin_memory
        self.sampler = EpochSampler()
        self.loader: torch.utils.data.DataLoader | None = None

    def epoch(self, epoch: int, batches: Iterable[list[int]]) -> torch.utils.data.DataLoader:
        """The loader, set to ``batches`` (lists of dataset indices) of ``epoch``."""
        self.sampler.batches = [[(epoch, i) for i in batch] for batch in batches]
        if self.loader is None:
            self.loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
                pin_memory=self.pin_memory,
            )
        return self.loader

    def close(self) -> None:
        """Let the loading processes end."""
        self.loader = None


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
    the augmentation moves with the pixels (``Augmenter.with_targets``). A batch with ``rays``
    too (the ``rays`` head, (B, H, W, R)) gets (B, 2 + R, H, W), channels last in memory:
    class, distance and the R ray lengths, which the augmentation turns with the objects
    (``Augmenter.with_targets``). A batch with ``offsets`` (the ``offsets`` head, (B, H, W,
    2)) gets (B, 3, H, W): class and the (x, y) offsets, turned with the objects.
    """
    images = batch["image"].to(ctx.device, non_blocking=True)  # (B, C, H, W)
    masks = batch["mask"].to(ctx.device, non_blocking=True)  # (B, H, W)
    weights = batch.get("weight")
    weights = weights.to(ctx.device, non_blocking=True) if weights is not None else None
    distance, rays, offsets = batch.get("distance"), batch.get("rays"), batch.get("offsets")
    if offsets is not None:
        offsets = offsets.to(ctx.device, non_blocking=True)
        if augment is not None:  # an ``Augmenter``: the offsets turn with the objects
            images, masks, weights, *_, offsets = augment.with_targets(  # type: ignore[attr-defined]
                images, masks, weights, generator=generator, offsets=offsets
            )
        assert offsets is not None
        target = torch.cat([masks[..., None].float(), offsets.float()], -1)  # (B, H, W, 3)
        masks = target.permute(0, 3, 1, 2)  # (B, 3, H, W), channels last in memory
    elif distance is not None:
        distance = distance.to(ctx.device, non_blocking=True)
        rays = None if rays is None else rays.to(ctx.device, non_blocking=True)
        if augment is not None:  # an ``Augmenter``: the maps move with the pixels
            images, masks, weights, distance, rays, _ = augment.with_targets(  # type: ignore[attr-defined]
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
