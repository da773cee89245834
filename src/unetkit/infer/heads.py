"""What a network's outputs mean: probabilities per output head, and class masks from them.

A semantic model's outputs are its classes (``UNet.activate``: softmax, sigmoid or none). An
instance model's start with its classes, then its head (``ObjectConfig.head``): a boundary
class (a class like the others), the normalised distance to the object's edge (a sigmoid), or
that distance followed by ``n_rays`` ray lengths in pixels (the ``rays`` head, whose rays turn
with the image under a flip: ``mirror_rays``), or the boundary class followed by two linear
(x, y) offset channels (the ``offsets`` head; flipped images: ``unflip_head``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def activate(
    logits: torch.Tensor,
    model_activate: Callable[[torch.Tensor], torch.Tensor],
    head: str | None,
    *,
    n_rays: int = 0,
    ray_scale: float = 1.0,
) -> torch.Tensor:
    """Network outputs -> probabilities. ``head``: an instance model's ``ObjectConfig.head``,
    None for a semantic model. ``model_activate`` (the model's activation) for a semantic model
    and the ``boundary`` head; for the ``distance`` head a softmax over the class channels and
    a sigmoid on the last (the distance); for the ``rays`` head that sigmoid on the channel
    before the ``n_rays`` rays, whose lengths are ``ray_scale`` times their outputs (at least
    0); for the ``offsets`` head a softmax over all but the last two channels, which are
    offsets as they are (float32)."""
    if head == "offsets":
        logits = logits.float()
        return torch.cat([torch.softmax(logits[:, :-2], 1), logits[:, -2:]], 1)
    if head == "distance":
        return torch.cat([torch.softmax(logits[:, :-1], 1), torch.sigmoid(logits[:, -1:])], 1)
    if head == "rays":
        r = n_rays
        logits = logits.float()  # lengths in pixels: more than bf16's 8 bits
        classes, prob = logits[:, : -r - 1], logits[:, -r - 1 : -r]
        lengths = torch.relu(logits[:, -r:]) * ray_scale
        return torch.cat([torch.softmax(classes, 1), torch.sigmoid(prob), lengths], 1)
    return model_activate(logits)


def mirror_rays(probs: torch.Tensor, dims: tuple[int, ...], rays: int) -> torch.Tensor:
    """The ray channels (the last ``rays``) of a prediction of the image flipped along
    ``dims``, flipped back, as rays of the image itself: a left-right flip maps the ray at angle
    phi to pi - phi, an up-down flip to -phi, both to phi + pi. ``rays`` 0: ``probs`` as is."""
    r = rays
    if not r:
        return probs
    k = torch.arange(r, device=probs.device)
    source = {(-1,): r // 2 - k, (-2,): -k, (-2, -1): k + r // 2}[tuple(dims)] % r
    return torch.cat([probs[:, :-r], probs[:, -r:][:, source]], 1)


def unflip_head(
    probs: torch.Tensor, dims: tuple[int, ...], head: str | None, n_rays: int = 0
) -> torch.Tensor:
    """A prediction of the image flipped along ``dims``, already flipped back, made that of
    the image itself: a ``rays`` head's ``n_rays`` rays turned (:func:`mirror_rays`), an
    ``offsets`` head's (x, y) offsets (the last two channels) negated along the flipped axes
    (columns -1: x, rows -2: y); any other head's as it is."""
    if head == "rays":
        return mirror_rays(probs, dims, n_rays)
    if head == "offsets":
        sign = torch.ones(probs.shape[1], device=probs.device, dtype=probs.dtype)
        sign[-2] = -1 if -1 in dims else 1
        sign[-1] = -1 if -2 in dims else 1
        return probs * sign.view(1, -1, 1, 1)
    return probs


def class_mask(probs: torch.Tensor, binary: bool, threshold: float) -> torch.Tensor:
    """Class indices of a semantic model from probabilities ``(K, H, W)``: argmax, or for
    ``binary`` models 1 where the foreground's probability is above ``threshold``."""
    if binary:
        foreground = probs[-1]  # one sigmoid channel, or class 1 of two
        return (foreground > threshold).to(torch.uint8)
    return class_argmax(probs)


def instance_mask(probs: torch.Tensor, head_channels: int, fg_threshold: float) -> torch.Tensor:
    """Class indices of an instance model from probabilities ``(K, H, W)``: object pixels
    (``1 - p(background) > fg_threshold``) get the likeliest object class; the head's
    ``head_channels`` last channels (boundary, distance, rays or offsets) are no classes of the
    mask."""
    k = probs.shape[0] - head_channels
    inside = (1 - probs[0]) > fg_threshold
    return torch.where(inside, class_argmax(probs[1:k]) + 1, 0).to(torch.uint8)


def class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(0)`` of ``(K, H, W)`` scores as uint8 (int32 beyond 256 classes).

    One comparison per class instead of a reduction over the outer dimension, which PyTorch
    runs about 40x slower on a CPU. Ties go to the lower class, as with ``argmax``; a NaN score
    never wins (``argmax`` would pick it).
    """
    dtype = torch.uint8 if probs.shape[0] <= 256 else torch.int32
    best = probs[0].clone()
    index = torch.zeros(probs.shape[1:], dtype=dtype, device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        index.masked_fill_(better, k)
        torch.where(better, probs[k], best, out=best)
    return index
