"""``Predictor``: a model file alone -> class masks and probabilities for images of any size.

Strategies (``PredictConfig.strategy``):

- ``full``: the whole image at once, padded (mirrored) to a legal size and cropped back exactly;
- ``letterbox`` / ``resize``: as the model was trained (to its training size), undone on the
  probabilities;
- ``tile``: blended sliding window, or the paper's overlap-tile for valid-padding models
  (``unetkit.infer.tiling``); the image streams tile by tile;
- ``auto``: ``letterbox`` / ``resize`` for models trained that way (they only know that scale);
  otherwise ``tile`` for images larger than the training size and ``full`` for the rest.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..config import STRATEGIES, ObjectConfig, PredictConfig
from ..data.imageio import match_channels
from ..data.normalize import image_to_tensor, normalization_stats
from ..errors import UnetkitError
from .backends import ModelInfo, Network, load_network, load_onnx, load_torch
from .budget import auto_tiling, image_bytes
from .tiling import SizeRule, iter_bands, plan_image, predict_tiled

_PROGRESS_TILES = 16  # show a tile progress bar for images with more tiles than this


class Predictor:
    """Predict class masks with a trained model; everything it needs comes from the model file.

    Build one with ``Predictor.from_checkpoint`` / ``Predictor.from_onnx`` / ``Predictor.load``.

    Args:
        network: the runnable network and its description.
        config: strategy, tile, overlap, blending, TTA, threshold (defaults: ``PredictConfig()``).
    """

    def __init__(self, network: Network, config: PredictConfig | None = None):
        self.network = network
        self.config = config or PredictConfig()
        if self.config.strategy not in STRATEGIES:
            raise UnetkitError(
                f"strategy must be one of {', '.join(STRATEGIES)}; got {self.config.strategy!r}"
            )
        self.rule = SizeRule.from_model(network.shape)
        self.progress = False
        _ = self.between_class  # an unknown --objects-between class fails here, once

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, config: PredictConfig | None = None, device: str | None = None
    ) -> Predictor:
        """A predictor for a unetkit checkpoint (PyTorch, ``config.precision`` autocast).

        ``device`` (when given) wins over ``config.device``.
        """
        config = config or PredictConfig()
        return cls(load_torch(path, device or config.device, config.precision), config)

    @classmethod
    def from_onnx(
        cls, path: str | os.PathLike, config: PredictConfig | None = None, device: str | None = None
    ) -> Predictor:
        """A predictor for an ONNX file written by ``unetkit export`` (run by onnxruntime)."""
        config = config or PredictConfig()
        return cls(load_onnx(path, device or config.device), config)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        config: PredictConfig | None = None,
        device: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Predictor:
        """``from_onnx`` for ``.onnx`` files, ``from_checkpoint`` for anything else
        (``checkpoint``: the file's contents when the caller has read them already)."""
        config = config or PredictConfig()
        device = device or config.device
        return cls(load_network(path, device, config.precision, checkpoint), config)

    # -- what the model is ---------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self.network.info

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def palette(self) -> list[list[int]]:
        return self.info.palette

    @property
    def instance(self) -> bool:
        """True for ``--task instance`` models: K classes plus a boundary class, a distance
        channel or a distance channel and rays (``ObjectConfig.head``), objects by watershed
        or polygons (``unetkit.objects.postprocess``)."""
        return self.info.task == "instance"

    @functools.cached_property
    def distance_head(self) -> bool:
        """True for instance models with the ``distance`` head: their last output channel is a
        sigmoid (the normalised distance to the object's edge), not a softmax class."""
        return self.instance and self.objects_config.head == "distance"

    @functools.cached_property
    def rays(self) -> int:
        """The rays of a ``rays`` head instance model (0 for any other model): its last
        ``rays`` output channels are ray lengths, the one before them a sigmoid."""
        cfg = self.objects_config
        return cfg.n_rays if self.instance and cfg.head == "rays" else 0

    @property
    def _head_channels(self) -> int:
        """Output channels after the classes of an instance model's mask (0 otherwise)."""
        return (1 + self.rays) if self.instance else 0

    @property
    def objects_config(self) -> ObjectConfig:
        """Post-processing of instance models: the model's own, with ``config``'s overrides."""
        return self.config.object_overrides(ObjectConfig.from_dict(self.info.objects or {}))

    @property
    def binary(self) -> bool:
        """True for binary tasks and one-channel heads: masks come from ``threshold``."""
        return self.info.task == "binary" or self.info.model_config.out_channels == 1

    def strategy_for(self, size: tuple[int, int]) -> str:
        """The strategy ``auto`` resolves to for an image of ``size`` = (H, W)."""
        if self.config.strategy != "auto":
            return self.config.strategy
        policy = self.info.preprocessing.resize
        if policy in ("letterbox", "resize"):
            return policy
        train_h, train_w = self.info.preprocessing.size_or()
        return "tile" if size[0] > train_h or size[1] > train_w else "full"

    # -- the network as tiling sees it -----------------------------------------------------------
    def _preparer(self, image: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
        """Window -> network input (C, h, w), normalised with the statistics of the whole
        ``image`` (per-image modes), never of the window."""
        pre = self.info.preprocessing
        stats = normalization_stats(image, pre)
        return lambda window: image_to_tensor(window, pre, stats)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Network outputs -> probabilities: the model's activation, or for the ``distance``
        head a softmax over the class channels and a sigmoid on the last (the distance); for
        the ``rays`` head that sigmoid on the channel before the rays, whose lengths are
        ``ray_scale`` times their outputs (at least 0)."""
        if self.distance_head:
            return torch.cat([torch.softmax(logits[:, :-1], 1), torch.sigmoid(logits[:, -1:])], 1)
        if self.rays:
            r, scale = self.rays, self.objects_config.ray_scale or 1.0
            logits = logits.float()  # lengths in pixels: more than bf16's 8 bits
            classes, prob = logits[:, : -r - 1], logits[:, -r - 1 : -r]
            rays = torch.relu(logits[:, -r:]) * scale
            return torch.cat([torch.softmax(classes, 1), torch.sigmoid(prob), rays], 1)
        return self.network.shape.activate(logits)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> probabilities ``(B, K, h', w')`` float32 (flip TTA averaged;
        a rays head's rays are mirrored with the image)."""
        net = self.network.run
        probs = self._activate(net(x))
        if self.config.tta:
            for dims in ((-1,), (-2,), (-2, -1)):
                flipped = self._activate(net(x.flip(dims))).flip(dims)
                probs = probs + self._mirror_rays(flipped, dims)
            probs = probs / 4
        return probs

    def _mirror_rays(self, probs: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """The ray channels of a prediction of the image flipped along ``dims``, flipped back,
        as rays of the image itself: a left-right flip maps the ray at angle phi to pi - phi,
        an up-down flip to -phi, both to phi + pi."""
        r = self.rays
        if not r:
            return probs
        k = torch.arange(r, device=probs.device)
        source = {(-1,): r // 2 - k, (-2,): -k, (-2, -1): k + r // 2}[tuple(dims)] % r
        return torch.cat([probs[:, :-r], probs[:, -r:][:, source]], 1)

    def _tile(self, held: int = 0) -> tuple[int, int]:
        """The input tile ``(h, w)``: ``config.tile``, else ``auto_tiling``'s side beside
        ``held`` bytes of the image's own buffers (``unetkit.infer.budget``)."""
        if self.config.tile:
            return int(self.config.tile[0]), int(self.config.tile[-1])
        width = self.info.model_config.level_widths[0]
        side = auto_tiling(width, self.network.device, held)[0] if held else self._auto_tiling[0]
        return side, side

    @property
    def _batch_size(self) -> int:
        """Tiles per forward pass: ``config.batch_size``, else ``auto_tiling``'s."""
        return self.config.batch_size or self._auto_tiling[1]

    @functools.cached_property
    def _auto_tiling(self) -> tuple[int, int]:
        return auto_tiling(self.info.model_config.level_widths[0], self.network.device)

    def _run(self, image: np.ndarray, reduce: Callable | None) -> torch.Tensor:
        """Probabilities (or ``reduce`` of them per band) at the image's size."""
        image = _as_hwc(image)
        size = image.shape[:2]
        strategy = self.strategy_for(size)
        prepare = self._preparer(image)
        with torch.inference_mode():
            if strategy in ("letterbox", "resize"):
                return self._run_scaled(image, strategy, reduce, prepare)
            classes = 0 if reduce is not None else self.info.model_config.out_channels
            held = image_bytes(size, image.shape[2], image.itemsize, classes)
            tile = self._tile(held) if strategy == "tile" else None
            return predict_tiled(
                self._forward,
                image,
                tile,
                self.config.overlap,
                self.rule,
                prepare=prepare,
                blend=self.config.blend,
                batch_size=self._batch_size,
                progress=self.progress and _tile_count(size, tile) > _PROGRESS_TILES,
                reduce=reduce,
            )

    def _run_scaled(
        self, image: np.ndarray, strategy: str, reduce: Callable | None, prepare: Callable
    ):
        from ..data.transforms import letterbox, resize_to

        if self.rays:
            raise UnetkitError(
                f"{self.info.source}: a rays-head instance model predicts at the image's own "
                f"scale (its rays are lengths in pixels); --strategy {strategy} would resize "
                "the image: use full or tile"
            )
        size = cast("tuple[int, int]", tuple(int(n) for n in self.info.preprocessing.size))
        scale = letterbox if strategy == "letterbox" else resize_to
        scaled, geometry = scale(image, size, nearest=False)
        probs = predict_tiled(
            self._forward, scaled, None, 0.0, self.rule, prepare=prepare
        )  # (K, h, w) at the training size; normalised with the original image's statistics
        probs = geometry.undo(probs, nearest=False).contiguous()  # (K, H, W)
        return reduce(probs) if reduce is not None else probs

    # -- public API ---------------------------------------------------------------------------
    def probs_to_mask(self, probs: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class indices from probabilities ``(K, H, W)``: argmax, or ``threshold`` if binary.

        Returns:
            (H, W) uint8 (uint16 beyond 256 classes).
        """
        probs = torch.as_tensor(probs)
        return self._mask(probs).cpu().numpy()

    def objectness(self, probs: np.ndarray) -> np.ndarray:
        """Each pixel's probability of belonging to an object, ``1 - p(background)`` (a
        single sigmoid channel: that channel), from ``predict_proba`` output."""
        return probs[0] if probs.shape[0] == 1 else 1.0 - probs[0]

    def _mask(self, probs: torch.Tensor) -> torch.Tensor:
        # instance models: object pixels get the likeliest object class (the head's channels,
        # boundary, distance or rays, are no classes of the mask)
        if self.instance:
            k = probs.shape[0] - self._head_channels
            inside = (1 - probs[0]) > self.objects_config.fg_threshold
            return torch.where(inside, class_argmax(probs[1:k]) + 1, 0).to(torch.uint8)
        if self.binary:
            foreground = probs[-1]  # one sigmoid channel, or class 1 of two
            return (foreground > self.config.threshold).to(torch.uint8)
        return class_argmax(probs)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class-index mask of one image, at its size.

        Args:
            image: (H, W) or (H, W, C) uint8 / uint16 / float image (channels converted
                grey <-> RGB to what the model expects).

        Returns:
            (H, W) int64 class indices (binary models: 1 where foreground > threshold).

        Raises:
            UnetkitError: an image whose channels cannot be converted, or an empty image.
        """
        return self.predict_mask(image).astype(np.int64)

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        """Like ``predict`` but compact: (H, W) uint8 (a huge image needs no int64 copy)."""
        return self._run(image, self._mask).numpy()

    def predict_objects(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class mask and objects of one image (``predict_scored_objects`` without scores).

        Returns:
            ((H, W) uint8 class mask as ``predict_mask``, (H, W) int32 object ids, 0 = none).
        """
        mask, ids, _ = self.predict_scored_objects(image)
        return mask, ids

    def predict_scored_objects(
        self, image: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Class mask, objects and each object's score of one image.

        Instance models: a seeded watershed on the whole image's stitched probabilities (and,
        for the ``distance`` head, distance map), or the ``rays`` head's polygons, once per
        image, never per tile
        (``unetkit.objects.postprocess.separate_objects``); the class mask agrees with the
        objects. Semantic models: the 4-connected components of each class other than
        background (``unetkit.objects.labels.connected_objects``), or with
        ``objects_between`` the regions that class separates
        (``unetkit.objects.postprocess.regions_between``). An object's score is its mean
        object probability, ``1 - p(background)`` over its pixels (``object_scores``; with
        ``objects_between``, ``1 - p(boundary class)``).

        Returns:
            ((H, W) uint8 class mask as ``predict_mask``, (H, W) int32 object ids, 0 = none,
            id -> score).
        """
        from ..objects.labels import connected_objects
        from ..objects.postprocess import (
            BETWEEN_DEFAULTS,
            object_scores,
            regions_between,
            separate_objects,
        )

        probs = self._run(image, None)
        if self.instance:
            array = probs.numpy()
            mask, ids = separate_objects(array, self.objects_config)
            return mask, ids, object_scores(ids, 1.0 - array[0])
        between = self.between_class
        if between is not None:
            if probs.shape[0] == 1:  # one sigmoid channel: class 1, or its complement
                boundary = probs[0] if between == 1 else 1 - probs[0]
            else:
                boundary = probs[between]
            boundary_np = boundary.float().numpy()
            regions = regions_between(boundary_np, self.config.object_overrides(BETWEEN_DEFAULTS))
            return self._mask(probs).numpy(), regions, object_scores(regions, 1.0 - boundary_np)
        mask = self._mask(probs).numpy()
        ids = connected_objects(mask, ignore_index=self.info.ignore_index)
        return mask, ids, object_scores(ids, self.objectness(probs.float().numpy()))

    @property
    def between_class(self) -> int | None:
        """The class index of ``PredictConfig.objects_between`` (None when not set).

        Raises:
            UnetkitError: not a class of this model, or an instance model (its objects come
                from its own boundary class).
        """
        name = self.config.objects_between
        if name is None:
            return None
        classes = list(self.info.classes)
        if self.instance:
            raise UnetkitError(
                f"--objects-between {name}: instance models separate objects with their own "
                "boundary class"
            )
        if name in classes:
            return classes.index(name)
        if name.isdigit() and int(name) < len(classes):
            return int(name)
        raise UnetkitError(
            f"--objects-between {name}: not a class of this model ({', '.join(classes)})"
        )

    def stats_step(self, size: tuple[int, int]) -> int | None:
        """The stride of the pixels whose statistics normalise an image of ``size`` (per-image
        normalisation), or None when the model's normalisation needs none."""
        from ..data.normalize import stats_step

        if self.info.preprocessing.normalize in ("image", "percentile"):
            return stats_step(*size)
        return None

    def iter_mask_bands(
        self,
        image,
        row_range: tuple[int, int] | None = None,
        skip: Callable[[slice | np.ndarray, slice | np.ndarray], bool] | None = None,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Class masks of an image read by region (``unetkit.data.largeimage.LargeImage``),
        one band of rows at a time, top to bottom: nothing of the size of the image is held.

        The image is tiled exactly as ``predict_mask`` tiles an in-memory image of its size
        (same plan, blend and whole-image normalisation statistics, from the same pixels), so
        the bands are the rows of ``predict_mask`` of the whole image.

        Args:
            image: the image (``LargeImage``, or anything with ``shape``, ``path``,
                ``read_region`` and ``strided``).
            row_range: only rows ``[r0, r1)``, exactly as the whole image's prediction has
                them (``unetkit.infer.tiling.iter_bands``).
            skip: ``skip(rows, cols)`` True for a network tile's input window (its row and
                column indices) that holds only background: the network does not see it and
                it counts as probability 1 for class 0 (0 for a one-channel sigmoid). A pixel
                that no skipped tile covers is predicted exactly as without ``skip``.

        Yields:
            ``(y0, y1, mask)`` with ``mask`` (y1 - y0, W) uint8; the bands tile [0, H)
            (``row_range``).

        Raises:
            UnetkitError: instance models (their watershed needs the whole image) and models
                that predict resized images (``letterbox`` / ``resize``).
        """
        from ..data.normalize import grid_pixels, pixel_stats

        if self.instance:
            raise UnetkitError(
                f"{image.path}: objects need the whole image's probabilities; predict a "
                "pyramid level (--level) that fits in memory"
            )
        size = (image.height, image.width)
        strategy = self.strategy_for(size)
        if strategy in ("letterbox", "resize"):
            raise UnetkitError(
                f"{image.path}: a model that predicts resized images ({strategy}) cannot "
                "predict an image read by region; use --strategy tile"
            )
        pre = self.info.preprocessing
        stats = None
        step = self.stats_step(size)
        if step is not None:
            grid = match_channels(image.strided(step), pre.channels, "image")
            stats = pixel_stats(grid_pixels(grid), pre.normalize)
        tile = self._tile() if strategy == "tile" else None
        plans = plan_image(size, tile, self.config.overlap, self.rule)

        def normalise(window: np.ndarray) -> torch.Tensor:
            return image_to_tensor(window, pre, stats)

        prepare: Callable[[np.ndarray], torch.Tensor] = normalise
        forward: Callable[[torch.Tensor], torch.Tensor] = self._forward
        if skip is not None:  # background windows: not read, not run
            image = _Skipping(image, skip)
            prepare = _blank_aware(normalise, self.info.model_config.in_channels)
            forward = self._forward_unless_blank
        with torch.inference_mode():
            for y0, y1, band in iter_bands(
                forward,
                image,
                plans,
                prepare=prepare,
                blend=self.config.blend,
                batch_size=self._batch_size,
                progress=self.progress,
                row_range=row_range,
            ):
                yield y0, y1, self._mask(band).cpu().numpy()

    def _forward_unless_blank(self, x: torch.Tensor) -> torch.Tensor:
        """``_forward`` for the windows of a batch that are not blank (all NaN: skipped
        background, ``_blank_aware``); blank ones get probability 1 for class 0."""
        blank = x.flatten(1).isnan().all(1)
        if not bool(blank.any()):
            return self._forward(x)
        h, w = self.rule.output_size((int(x.shape[-2]), int(x.shape[-1])))
        k = int(self.info.model_config.out_channels)
        out = torch.zeros(len(x), k, h, w, device=self.network.device)
        if k > 1:
            out[:, 0] = 1.0
        if not bool(blank.all()):
            seen = self._forward(x[~blank])
            out = out.to(seen.device)
            out[~blank] = seen.to(out.dtype)
        return out

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities of one image, at its size.

        Args:
            image: as for ``predict``.

        Returns:
            (K, H, W) float32, K = number of classes (a one-channel sigmoid model gives
            ``[1 - p, p]``); instance models: K + 1, the last channel the boundary class's
            probability or, for the ``distance`` head, the predicted normalised distance to
            the object's edge (not a probability: the first K sum to 1 without it); the
            ``rays`` head: K + 1 + ``n_rays``, the object probability (the predicted
            normalised distance) and the ray lengths in pixels.
        """
        probs = self._run(image, None)
        if probs.shape[0] == 1 and len(self.classes) == 2:
            probs = torch.cat([1 - probs, probs])
        return probs.numpy()


class _Blank(np.ndarray):
    """The window of a tile that the network does not see (``_Skipping``)."""


class _Skipping:
    """An image read by region whose background windows (``skip(rows, cols)``) come back as
    ``_Blank`` placeholders of the window's size instead of pixels."""

    def __init__(self, image, skip: Callable[[slice | np.ndarray, slice | np.ndarray], bool]):
        self.image, self.skip = image, skip
        self.shape, self.path = image.shape, image.path

    def read_region(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
        if not self.skip(rows, cols):
            return self.image.read_region(rows, cols)
        size = [len(range(self.shape[i])[r]) if isinstance(r, slice) else len(r)
                for i, r in enumerate((rows, cols))]  # fmt: skip
        return np.broadcast_to(np.zeros((), np.uint8), (*size, 1)).view(_Blank)


def _blank_aware(
    prepare: Callable[[np.ndarray], torch.Tensor], channels: int
) -> Callable[[np.ndarray], torch.Tensor]:
    """``prepare``, but a ``_Blank`` window becomes an all-NaN input (which no image gives),
    so ``Predictor._forward_unless_blank`` recognises it in its batch."""

    def run(window: np.ndarray) -> torch.Tensor:
        if isinstance(window, _Blank):
            return torch.full((channels, *window.shape[:2]), float("nan"))
        return prepare(window)

    return run


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


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or min(image.shape[:2]) < 1:
        raise UnetkitError(f"image must be (H, W) or (H, W, C) and non-empty; got {image.shape}")
    return image


def _tile_count(size: tuple[int, int], tile: tuple[int, int] | None) -> int:
    if tile is None:
        return 1
    return int(np.prod([-(-n // max(t, 1)) for n, t in zip(size, tile)]))
