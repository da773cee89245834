"""Joint image + mask geometry: letterbox / resize with exact undo, and batch augmentation.

Masks are always resampled with nearest neighbour; pixels that come from outside the image
get the ignore index. The :class:`Augmenter` works on whole batches on the tensors' device
(CPU or CUDA) and composes every geometric change into a single ``grid_sample`` grid, so an
image is interpolated once however many augmentations are on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..config.data import GAMMA

__all__ = ["Augmenter", "Letterbox", "Resized", "letterbox", "resize_array", "resize_to"]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest resizing (pixel centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_array(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) numpy array to ``size`` = (height, width).

    Nearest is exact index picking (any dtype, values never mixed); otherwise area averaging
    when shrinking and bilinear when enlarging (OpenCV), dtype kept.
    """
    h, w = array.shape[:2]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return array
    if nearest:
        return array[_nearest_index(h, out_h)][:, _nearest_index(w, out_w)]
    shrink = out_h <= h and out_w <= w
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    src = (
        array.astype(np.float32) if array.dtype not in (np.uint8, np.uint16, np.float32) else array
    )
    out = cv2.resize(src, (out_w, out_h), interpolation=interp)
    if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return out.astype(array.dtype, copy=False)


def _resize_any(array, size: tuple[int, int], nearest: bool):
    """Resize numpy (H, W[, C]) or torch (C, H, W) / (H, W) to ``size``."""
    if isinstance(array, torch.Tensor):
        batched = array[None] if array.dim() == 3 else array[None, None]
        mode = "nearest" if nearest else "bilinear"
        kwargs = {} if nearest else {"align_corners": False}
        dtype = array.dtype
        src = batched if batched.is_floating_point() else batched.float()
        out = F.interpolate(src, size=size, mode=mode, **kwargs).to(dtype)
        return out[0] if array.dim() == 3 else out[0, 0]
    return resize_array(np.asarray(array), size, nearest)


@dataclass(frozen=True)
class Resized:
    """Geometry of a plain resize, so that it can be undone.

    Attributes:
        original: (height, width) before.
        size: (height, width) after.
    """

    original: tuple[int, int]
    size: tuple[int, int]

    def undo(self, array, nearest: bool):
        """Resize back to ``original``: numpy (H, W[, C]) or torch (C, H, W) / (H, W)."""
        return _resize_any(array, self.original, nearest)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of a letterbox: pasted on a square of side ``side``, then resized.

    Attributes:
        original: (height, width) of the input.
        side: the square's side (the longest input side).
        offset: (top, left) of the input inside the square ((0, 0): the top
            left, as simple letterboxing code does).
        size: (height, width) of the result.
    """

    original: tuple[int, int]
    side: int
    offset: tuple[int, int]
    size: tuple[int, int]

    def undo(self, array, nearest: bool):
        """Map a result-sized array back to the original (H, W).

        Args:
            array: numpy (H, W) / (H, W, C) or torch (C, H, W) / (H, W) at ``size``.
            nearest: nearest neighbour (masks) or bilinear (images, probabilities).

        Returns:
            the same kind of array at ``original`` size.
        """
        square = _resize_any(array, (self.side, self.side), nearest)
        (top, left), (h, w) = self.offset, self.original
        if isinstance(square, torch.Tensor):
            return square[..., top : top + h, left : left + w]
        return square[top : top + h, left : left + w]


def letterbox(
    array: np.ndarray,
    size: tuple[int, int],
    nearest: bool,
    fill: float = 0,
    center: bool = False,
) -> tuple[np.ndarray, Letterbox]:
    """Paste on a ``fill``-valued square of the longest side, then resize to ``size``.

    Args:
        array: (H, W) or (H, W, C) numpy array.
        size: (height, width) of the result.
        nearest: nearest neighbour (masks) instead of area / bilinear (images).
        fill: value of the padding (black for images; pass the ignore index for masks).
        center: centre the input in the square instead of the seed's top-left placement.

    Returns:
        (resized array, :class:`Letterbox` geometry for :meth:`Letterbox.undo`).
    """
    h, w = array.shape[:2]
    side = max(h, w)
    top, left = ((side - h) // 2, (side - w) // 2) if center else (0, 0)
    square = np.full((side, side, *array.shape[2:]), fill, dtype=array.dtype)
    square[top : top + h, left : left + w] = array
    size = cast("tuple[int, int]", tuple(size))  # a list is accepted too
    out = resize_array(square, size, nearest)
    return out, Letterbox(original=(h, w), side=side, offset=(top, left), size=size)


def resize_to(
    array: np.ndarray, size: tuple[int, int], nearest: bool
) -> tuple[np.ndarray, Resized]:
    """Stretch to ``size`` = (height, width); returns the array and its :class:`Resized`."""
    h, w = array.shape[:2]
    size = cast("tuple[int, int]", tuple(size))  # a list is accepted too
    return resize_array(array, size, nearest), Resized(original=(h, w), size=size)


# ---------------------------------------------------------------------------------------------
# batch augmentation
# ---------------------------------------------------------------------------------------------
def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _chance(n: int, p: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) < p


def _normal_on(like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``like``'s shape, dtype and device.

    On the CPU it comes from ``gen`` itself. On a GPU, drawing a full-size batch on the CPU
    and copying it over cost 4 ms a batch (16 % of a GPU training loop's time on DSB), so it
    comes from a GPU generator seeded by one draw of ``gen``: a fixed seed still gives the
    same noise, and a resumed run the same noise as an uninterrupted one.
    """
    if like.device.type == "cpu":
        return torch.randn(like.shape, generator=gen).to(like.dtype)
    device_gen = None
    if gen is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        device_gen = torch.Generator(device=like.device).manual_seed(seed)
    return torch.randn(like.shape, generator=device_gen, device=like.device, dtype=like.dtype)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """(B,) sigmas -> (B, 2 * radius + 1) normalised 1-D kernels; sigma 0 gives a delta."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    safe = sigmas.clamp_min(1e-6)[:, None]
    k = torch.exp(-(x[None] ** 2) / (2 * safe**2))
    return k / k.sum(dim=1, keepdim=True)


class Augmenter:
    """Random joint augmentation of a batch, reproducible from a CPU ``torch.Generator``.

    Geometry (one sampling grid per sample): flips, 90-degree rotations (square inputs),
    affine rotate / scale / shift with probability ``affine``, and the paper's elastic
    deformation with probability ``elastic`` (an ``elastic_grid`` x ``elastic_grid`` grid of
    Gaussian displacements with std ``elastic_sigma`` pixels, upsampled bicubically to a dense
    field). Images are sampled bilinearly with reflection padding, masks with nearest neighbour
    (outside -> ignore index), weights bilinearly. Then on images only: brightness, contrast and
    gamma (relative to each image's intensity range, so normalised inputs work), Gaussian noise
    (std up to ``noise`` times the range) and, with probability ``blur``, a Gaussian blur.

    Args:
        cfg: the knobs; any of them 0 / False disables that augmentation.
        ignore_index: mask value for pixels sampled from outside the image.
    """

    def __init__(self, cfg: AugmentConfig, ignore_index: int = 255) -> None:
        self.cfg = cfg
        self.ignore_index = ignore_index

    # -- geometry ---------------------------------------------------------------------------
    def _affine(self, b: int, h: int, w: int, gen: torch.Generator | None) -> torch.Tensor | None:
        """(B, 2, 3) maps from output pixel offsets (from the centre) to input offsets."""
        cfg = self.cfg
        eye = torch.eye(2, dtype=torch.float64).repeat(b, 1, 1)
        mat, shift = eye.clone(), torch.zeros(b, 2, dtype=torch.float64)
        used = False
        if cfg.flip:
            flips = torch.stack([_chance(b, 0.5, gen), _chance(b, 0.5, gen)], dim=1)
            mat = mat * torch.where(flips, -1.0, 1.0).to(torch.float64)[:, None, :]
            used = True
        if cfg.rot90 and h == w:
            k = torch.randint(0, 4, (b,), generator=gen).to(torch.float64)
            cos, sin = torch.cos(k * math.pi / 2).round(), torch.sin(k * math.pi / 2).round()
            rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
            mat = rot @ mat
            used = True
        if cfg.affine > 0:
            on = _chance(b, cfg.affine, gen).to(torch.float64)
            angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180 * on
            lo, hi = cfg.scale
            scale = torch.exp(_uniform(b, math.log(lo), math.log(hi), gen) * on)
            move = (
                torch.stack(
                    [
                        _uniform(b, -cfg.shift, cfg.shift, gen) * w,
                        _uniform(b, -cfg.shift, cfg.shift, gen) * h,
                    ],
                    1,
                )
                * on[:, None]
            )
            cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
            rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
            mat, shift = rot @ mat, move
            used = True
        return torch.cat([mat, shift[:, :, None]], dim=2) if used else None

    def _elastic(
        self,
        b: int,
        h: int,
        w: int,
        gen: torch.Generator | None,
        unit: tuple[float, float] = (1, 1),
        device: torch.device | str | None = None,
    ) -> torch.Tensor | None:
        """(B, 2, H, W) dense (x, y) displacements in pixels / ``unit``, or None.

        The paper's recipe: Gaussian displacements (std ``elastic_sigma`` px) on a coarse
        ``elastic_grid`` x ``elastic_grid`` grid spanning the image, bicubically interpolated.
        """
        cfg = self.cfg
        if cfg.elastic <= 0 or cfg.elastic_sigma <= 0 or cfg.elastic_grid < 2:
            return None
        on = _chance(b, cfg.elastic, gen).to(torch.float32)
        g = cfg.elastic_grid
        coarse = torch.randn(b, 2, g, g, generator=gen) * cfg.elastic_sigma
        if not bool(on.any()):
            return None
        scale = on[:, None, None, None] / torch.tensor(unit, dtype=torch.float32).view(1, 2, 1, 1)
        coarse = (coarse * scale).to(device)  # upsample where the batch lives
        return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)

    def _grid(self, b: int, h: int, w: int, gen, device) -> torch.Tensor | None:
        """(B, H, W, 2) normalised sampling grid (align_corners=False), or None for identity."""
        affine = self._affine(b, h, w, gen)  # pixel offsets from the centre, (B, 2, 3)
        half = (w / 2, h / 2)  # pixel offset = normalised coordinate * half
        elastic = self._elastic(b, h, w, gen, unit=half, device=device)
        if affine is None and elastic is None:
            return None
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        if affine is not None:
            d = torch.tensor(half, dtype=torch.float64)
            theta[:, :, :2] = affine[:, :, :2] * d[None, None, :] / d[None, :, None]  # D^-1 A D
            theta[:, :, 2] = affine[:, :, 2] / d
        grid = F.affine_grid(theta.float().to(device), [b, 1, h, w], align_corners=False)
        if elastic is not None:
            grid = grid + elastic.permute(0, 2, 3, 1)  # (B, H, W, 2)
        return grid

    def _sample(self, images, masks, weights, maps, grid):
        """Resample images (bilinear, reflect), masks (nearest, outside -> ignore), weights and
        maps (bilinear, outside -> 0)."""
        images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        # nearest picks pixel round(((g + 1) * size - 1) / 2): inside exactly when -1 < g < 1
        inside = ((grid > -1) & (grid < 1)).all(dim=-1)  # (B, H, W)
        picked = F.grid_sample(
            masks[:, None].to(grid.dtype), grid, mode="nearest", padding_mode="border",
            align_corners=False,
        )[:, 0].long()  # fmt: skip
        masks = torch.where(inside, picked, self.ignore_index)
        if weights is not None:
            weights = F.grid_sample(
                weights[:, None].to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                align_corners=False,
            )[:, 0]  # fmt: skip
        if maps is not None:
            maps = F.grid_sample(
                maps[:, None].to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                align_corners=False,
            )[:, 0]  # fmt: skip
        return images, masks, weights, maps

    # -- intensities ------------------------------------------------------------------------
    def _photometric(
        self, images: torch.Tensor, gen: torch.Generator | None, owned: bool
    ) -> torch.Tensor:
        """Gamma, contrast + brightness, noise, blur; in place on a tensor this call owns."""
        cfg, b = self.cfg, images.shape[0]
        gamma_strength = GAMMA if cfg.gamma is None else cfg.gamma  # None: a plan's default
        if not (gamma_strength > 0 or cfg.contrast > 0 or cfg.brightness > 0 or cfg.noise > 0):
            return self._blur(images, gen) if cfg.blur > 0 else images

        def draw(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=images.device, dtype=images.dtype).view(b, 1, 1, 1)

        low, high = torch.aminmax(images.reshape(b, -1), dim=1)
        low = low.view(b, 1, 1, 1)
        span = (high.view(b, 1, 1, 1) - low).clamp_min(1e-6)
        out = images if owned else images.clone()
        if gamma_strength > 0:  # on the image's own [min, max] range: normalised inputs work
            gamma = draw(torch.exp(_uniform(b, -gamma_strength, gamma_strength, gen)))
            out.sub_(low).div_(span).clamp_(0, 1).pow_(gamma).mul_(span).add_(low)
        if cfg.contrast > 0 or cfg.brightness > 0:
            factor = draw(_uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, gen))
            shift = draw(_uniform(b, -cfg.brightness, cfg.brightness, gen)) * span
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out.mul_(factor).add_(mean * (1 - factor) + shift)  # contrast about the mean
        if cfg.noise > 0:
            std = draw(_uniform(b, 0.0, cfg.noise, gen)) * span
            noise = _normal_on(out, gen)
            out.addcmul_(noise, std)
        return self._blur(out, gen) if cfg.blur > 0 else out

    def _blur(self, images: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Gaussian blur (sigma 0.5-1.5 px) of the samples chosen with probability ``blur``."""
        b, c, h, w = images.shape
        on = _chance(b, self.cfg.blur, gen)
        sigma = _uniform(b, 0.5, 1.5, gen)
        index = on.nonzero()[:, 0]
        if len(index) == 0:
            return images
        n, radius = len(index), 3
        k = _gaussian_kernels(sigma[index], radius).to(images.device, images.dtype)  # (n, K)
        k = k.repeat_interleave(c, dim=0)  # (n*C, K)
        chosen = images[index.to(images.device)].reshape(1, n * c, h, w)
        x = F.pad(chosen, (radius,) * 4, mode="reflect")
        x = F.conv2d(x, k[:, None, :, None], groups=n * c)  # vertical, (1, n*C, H, W + 2r)
        x = F.conv2d(x, k[:, None, None, :], groups=n * c)  # horizontal, (1, n*C, H, W)
        out = images.clone()
        out[index.to(images.device)] = x.reshape(n, c, h, w)
        return out

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        weights: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Augment a batch.

        Args:
            images: (B, C, H, W) float.
            masks: (B, H, W) int64 class indices.
            weights: optional (B, H, W) float pixel weights.
            generator: CPU generator all random numbers come from (fixed seed -> identical
                output on a given device; a GPU batch's noise comes from a GPU generator
                seeded by it); None uses torch's global generators.

        Returns:
            (images (B, C, H, W), masks (B, H, W) int64, weights (B, H, W) or None); the
            inputs are never modified.
        """
        images, masks, weights, *_ = self.with_targets(images, masks, weights, generator=generator)
        return images, masks, weights

    def with_targets(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        weights: torch.Tensor | None = None,
        maps: torch.Tensor | None = None,
        rays: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        offsets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
               torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """``__call__`` plus the dense targets of the instance heads, moved with the pixels:
        ``maps`` (B, H, W) float (a normalised distance map), resampled bilinearly on the
        images' grid, 0 outside the image (where the mask is the ignore index); ``rays``
        (B, H, W, R) float, rays last: each object pixel's ray lengths (pixels) to its
        object's edge at the angles ``unetkit.data.rays.ray_angles(R)``, made the rays of the
        transformed objects (``unetkit.data.rays.carry_rays``); ``offsets`` (B, H, W, 2)
        float, each object pixel's (x, y) offset from its object's centre, mapped into the
        transformed frame (``unetkit.data.offsets.carry_offsets``). Images, masks and
        weights are exactly those ``__call__`` gives from the same generator state.

        Returns:
            (images, masks, weights, maps, rays, offsets); a target not given is None.
        """
        b, _, h, w = images.shape
        out_dtype = images.dtype
        owned = images.dtype not in (torch.float32, torch.float64)
        if owned:
            images = images.float()  # half precision would blur the sampling grid
        grid = self._grid(b, h, w, generator, images.device)
        if grid is not None:
            grid = grid.to(images.dtype)
            images, masks, weights, maps = self._sample(images, masks, weights, maps, grid)
            if rays is not None:
                from .rays import carry_rays

                rays = carry_rays(rays, grid)
            if offsets is not None:
                from .offsets import carry_offsets

                offsets = carry_offsets(offsets, grid)
            owned = True
        images = self._photometric(images, generator, owned)
        return images.to(out_dtype), masks, weights, maps, rays, offsets
