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
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..config import STRATEGIES, ObjectConfig, PredictConfig
from ..data.imageio import match_channels
from ..data.normalize import image_to_tensor, normalization_stats
from ..errors import UnetkitError
from .backends import ModelInfo, Network, load_onnx, load_torch
from .budget import auto_tiling, image_bytes
from .heads import activate, class_mask, instance_mask, unflip_head
from .heads import class_argmax as class_argmax  # tests import it from here
from .predicted_objects import between_class, objectness, scored_objects
from .skipping import SkippingImage, blank_aware, unless_blank
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
        """A predictor for a unetkit checkpoint (PyTorch, ``config.precision`` autocast);
        ``device`` (when given) wins over ``config.device``."""
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
        if Path(path).suffix.lower() == ".onnx":
            return cls.from_onnx(path, config, device)
        config = config or PredictConfig()
        device = device or config.device
        return cls(load_torch(path, device, config.precision, checkpoint=checkpoint), config)

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
    def head(self) -> str | None:
        """An instance model's output head (``ObjectConfig.head``); None for other models."""
        return self.objects_config.head if self.instance else None

    @functools.cached_property
    def rays(self) -> int:
        """The rays of a ``rays`` head instance model (0 for any other model): its last
        ``rays`` output channels are ray lengths, the one before them a sigmoid."""
        cfg = self.objects_config
        return cfg.n_rays if self.instance and cfg.head == "rays" else 0

    @functools.cached_property
    def offsets(self) -> int:
        """2 for an ``offsets`` head instance model (last channels: x, y offsets), else 0."""
        return 2 if self.instance and self.objects_config.head == "offsets" else 0

    @property
    def _head_channels(self) -> int:
        """Output channels after the classes of an instance model's mask (0 otherwise)."""
        return (1 + self.rays + self.offsets) if self.instance else 0

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
        """Network outputs -> probabilities, as the model's head has them
        (``unetkit.infer.heads.activate``)."""
        scale = (self.objects_config.ray_scale or 1.0) if self.rays else 1.0
        act = self.network.shape.activate
        return activate(logits, act, self.head, n_rays=self.rays, ray_scale=scale)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> probabilities ``(B, K, h', w')`` float32 (flip TTA averaged,
        rays and offsets mirrored with the image: ``unflip_head``)."""
        net = self.network.run
        probs = self._activate(net(x))
        if self.config.tta:
            for dims in ((-1,), (-2,), (-2, -1)):
                flipped = self._activate(net(x.flip(dims))).flip(dims)
                probs = probs + unflip_head(flipped, dims, self.head, self.rays)
            probs = probs / 4
        return probs

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
        return objectness(probs)

    def _mask(self, probs: torch.Tensor) -> torch.Tensor:
        if self.instance:
            return instance_mask(probs, self._head_channels, self.objects_config.fg_threshold)
        return class_mask(probs, self.binary, self.config.threshold)

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
        """Class mask, objects and each object's score of one image, made once per image from
        its stitched probabilities, never per tile (``unetkit.infer.predicted_objects``).

        Instance models: a seeded watershed on the probabilities (and, for the ``distance``
        head, distance map), or the ``rays`` head's polygons; the class mask agrees with the
        objects. Semantic models: the 4-connected components of each class other than
        background, or with ``objects_between`` the regions that class separates. An object's
        score is its mean object probability, ``1 - p(background)`` over its pixels (with
        ``objects_between``, ``1 - p(boundary class)``).

        Returns:
            ((H, W) uint8 class mask as ``predict_mask``, (H, W) int32 object ids, 0 = none,
            id -> score).
        """
        probs = self._run(image, None)
        instance = self.objects_config if self.instance else None
        between = None if self.instance else self.between_class
        return scored_objects(
            probs, self._mask, self.config, instance, between, self.info.ignore_index
        )

    @property
    def between_class(self) -> int | None:
        """The class index of ``PredictConfig.objects_between`` (None when not set).

        Raises:
            UnetkitError: not a class of this model, or an instance model (its objects come
                from its own boundary class).
        """
        return between_class(self.config.objects_between, self.info.classes, self.instance)

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
        if skip is not None:  # background windows: not read, not run (``infer.skipping``)
            image = SkippingImage(image, skip)
            prepare = blank_aware(normalise, self.info.model_config.in_channels)
            out_channels = int(self.info.model_config.out_channels)
            forward = unless_blank(
                self._forward, self.rule.output_size, out_channels, self.network.device
            )
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
