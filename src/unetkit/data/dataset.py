"""``SegmentationDataset``: (image, mask) samples of a dataset folder, by file stem."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Mapping
from typing import cast

import numpy as np
import torch

from ..config import INSTANCE_HEADS, DataConfig
from ..device import available_memory
from ..errors import UnetkitError
from .imageio import match_channels, read_image
from .instances import read_instances
from .layout import DatasetInfo, describe_dataset
from .normalize import image_to_tensor, normalization_stats
from .split import Box, hide_labels
from .targets import boundary_target, object_distance
from .transforms import letterbox, resize_to

log = logging.getLogger(__name__)


def _pad_to(array: np.ndarray, size: tuple[int, int], fill: float | None) -> np.ndarray:
    """Pad (centred) to at least ``size``: reflect when ``fill`` is None, else constant."""
    h, w = array.shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if not (ph or pw):
        return array
    pads = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (array.ndim - 2)
    if fill is not None:
        return np.pad(array, pads, mode="constant", constant_values=fill)
    return np.pad(array, pads, mode="reflect" if min(h, w) > 1 else "edge")


_POINTS_PER_CLASS = 512

# what a read image holds: image, mask (the target), weight map, distance map, the rays of its
# object pixels (``unetkit.data.rays.ray_table``), crop centres
_Rays = tuple[np.ndarray, np.ndarray]
_Loaded = tuple[
    np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None", "_Rays | None", dict
]


def _class_points(mask: np.ndarray, k: int, stem: str) -> dict[int, np.ndarray]:
    """Up to 512 (y, x) positions of each foreground class in ``mask`` (a fixed sample per
    file), for the crops that :attr:`DataConfig.oversample` centres on foreground."""
    rng = np.random.default_rng(zlib.crc32(stem.encode()))
    points = {}
    for c in range(1, k):
        ys, xs = np.nonzero(mask == c)
        if ys.size:
            pick = rng.choice(ys.size, min(ys.size, _POINTS_PER_CLASS), replace=False)
            points[c] = np.stack([ys[pick], xs[pick]], 1)
    return points


def _check_values(mask: np.ndarray, k: int, ignore: int, path, classes) -> None:
    """Mask values must be class indices 0..k-1 or the ignore index."""
    top = int(mask.max()) if mask.size else 0
    if top < k and int(mask.min()) >= 0:
        return
    bad = np.unique(mask[((mask >= k) | (mask < 0)) & (mask != ignore)])
    if bad.size:
        raise UnetkitError(
            f"{path}: mask values {', '.join(map(str, bad[:10].tolist()))} are not classes "
            f"0..{k - 1} ({', '.join(classes)}) nor the ignore index {ignore}"
        )


_NO_RESIZED_RAYS = (
    "the rays and offsets instance heads train on whole images or random crops (--resize "
    "none or random-crop): resizing to {} would distort the objects their targets measure"
)


class SegmentationDataset(torch.utils.data.Dataset):
    """Image / mask pairs as tensors: image float32 (C, H, W), mask int64 (H, W).

    Args:
        info: a :class:`DatasetInfo` or a dataset folder.
        stems: the subset to use (default: all paired stems).
        config: channels, resize policy and size, normalisation, ignore index, 0/255 mapping,
            caching.
        train: random crops (``random-crop`` policy); otherwise whole images.
        weight_fn: full (H, W) int64 mask -> (H, W) float pixel weights; called once per mask
            and cached, then cropped / resized like the mask (bilinear).
        seed: crop seed; crop of sample i in epoch e uses ``default_rng((seed, e, i))``.
        boundary_width: > 0 for ``--task instance``: the mask becomes the instance target
            (each object's edge set to class K, ``unetkit.data.targets.boundary_target``)
            from the ``instances/`` label image, and ``weight_fn`` is called as
            ``weight_fn(target, instances)``.
        boundary_fraction: with ``boundary_width``, the boundary also covers each object's
            pixels closer to its edge than this fraction of its inner radius.
        instance_head: with ``boundary_width``: ``boundary`` (the target above) or
            ``distance``: the mask keeps the data's K classes and each item also holds
            ``distance``, each object pixel's normalised distance to its object's edge
            (``unetkit.data.targets.object_distance``), computed once per image, cached and
            cropped / resized with the mask (bilinear; the map does not change with scale).
            ``weight_fn`` is then given the 1 px boundary target (``boundary_target`` at
            width 1), so that the paper's border term covers the edges of touching objects.
            ``rays``: as ``distance``, and each item also holds ``rays`` (H, W, n_rays), the
            lengths of each object pixel's rays to its object's edge
            (``unetkit.data.rays``), measured once per image on the whole image (a crop's
            rays reach past the crop, as far as the object does) and cached compactly (the
            object pixels' rays as float16); whole images or random crops only.
            ``offsets``: the ``boundary`` target, and each item also holds ``offsets``
            (H, W, 2), each object pixel's (x, y) offset from its object's centre over its
            radius (``unetkit.data.offsets``), measured on the whole image and cached like
            the rays; whole images or random crops only.
        n_rays: rays per pixel of the ``rays`` head.
        regions: validation held out as a box of each image (``unetkit.data.split``,
            ``held_out_box``): a training set (``train``) ignores the labels inside its
            image's box, any other set has only the labels inside it (the rest set to the
            ignore index); images without a box are whole.
    """

    def __init__(
        self,
        info: DatasetInfo | str | os.PathLike,
        stems: list[str] | None = None,
        config: DataConfig | None = None,
        train: bool = False,
        weight_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
        boundary_width: int = 0,
        boundary_fraction: float = 0.0,
        instance_head: str = "boundary",
        n_rays: int = 32,
        regions: Mapping[str, Box] | None = None,
    ) -> None:
        self.info = info if isinstance(info, DatasetInfo) else describe_dataset(info)
        self.config = config or DataConfig()
        chosen = list(self.info.stems if stems is None else stems)
        missing = sorted(set(chosen) - set(self.info.image_files))
        if missing:
            raise UnetkitError(
                f"{self.info.root}: stems without an image/mask pair: {', '.join(missing[:10])}"
            )
        self._stems = chosen
        self.train = train
        self.weight_fn = weight_fn
        self.seed = seed
        self.boundary_width = int(boundary_width)
        self.boundary_fraction = float(boundary_fraction)
        if instance_head not in INSTANCE_HEADS:
            raise UnetkitError(
                f"instance head must be one of {', '.join(INSTANCE_HEADS)}; got {instance_head!r}"
            )
        self.instance_head, self.n_rays = instance_head, int(n_rays)
        if self._tabled and self.config.resize in ("letterbox", "resize"):
            raise UnetkitError(_NO_RESIZED_RAYS.format(self.config.resize))
        self.ray_lengths: dict[str, tuple[float, int]] = {}  # per stem: sum of rays, count
        self.regions = dict(regions or {})
        self.object_areas: dict[str, np.ndarray] = {}  # per stem, once its instances are read
        self.epoch = 0
        self._cache: dict[str, _Loaded] = {}
        self._stats_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = {}
        self._cache_ok = self.config.cache
        self._shapes: dict[str, tuple[int, int]] = {}  # (H, W) of each image read so far
        self._slots: list[int] | None = None  # sample index -> stem index (``plan_crops``)

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def _tabled(self) -> bool:
        """The head's targets are a per-pixel table (rays or offsets) cached compactly."""
        return self.boundary_width > 0 and self.instance_head in ("rays", "offsets")

    @property
    def palette(self) -> list[list[int]]:
        return self.info.palette

    @property
    def ignore_index(self) -> int:
        return self.config.ignore_index

    @property
    def stems(self) -> list[str]:
        return list(self._stems)

    def __len__(self) -> int:
        return len(self._stems) if self._slots is None else len(self._slots)

    def plan_crops(self, min_crops: int = 0) -> dict[str, int]:
        """Decide how many random crops each image gives per epoch (``DataConfig.sampling``):
        afterwards the data set's length is the number of crops of one epoch and sample ``i``
        is a crop of image ``stem_of(i)``. Reads the images not read yet; call it once the
        patch size is known.

        Args:
            min_crops: a training set with fewer samples per epoch gives each image the same
                whole multiple of its crops, the fewest that reach it (each sample its own
                random crop, unlike extra steps over the same samples).

        Returns:
            crops per stem.
        """
        cfg = self.config
        crops = dict.fromkeys(self._stems, 1)
        if self.train and cfg.sampling == "area" and cfg.resize == "random-crop":
            patch = max(1, int(cfg.size[0]) * int(cfg.size[1]))
            for stem in self._stems:
                if stem not in self._shapes:
                    self._load(stem)
                h, w = self._shapes[stem]
                crops[stem] = max(1, round(h * w / patch))
        total = sum(crops.values())
        if self.train and 0 < total < min_crops:
            times = -(-min_crops // total)
            crops = {stem: n * times for stem, n in crops.items()}
        self._slots = [i for i, stem in enumerate(self._stems) for _ in range(crops[stem])]
        return crops

    def stem_of(self, index: int) -> str:
        """The image that sample ``index`` is (a crop of)."""
        return self._stems[index if self._slots is None else self._slots[index]]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def _load(self, stem: str) -> _Loaded:
        if stem in self._cache:
            return self._cache[stem]
        path = self.info.image_files[stem]
        image = match_channels(read_image(path), self.config.channels, str(path))
        self._shapes[stem] = (int(image.shape[0]), int(image.shape[1]))
        if stem not in self.info.mask_files:  # image-only data set (image-to-image training)
            mask: np.ndarray = np.zeros(image.shape[:2], np.int64)
        else:
            # 0/255 -> 0/1 where the folder needs it; ids > 0 for instance-only folders
            mask = self.info.read_mask(stem, binary_255=self.config.binary_255)
        if image.shape[:2] != mask.shape:
            raise UnetkitError(
                f"{self.info.mask_files[stem]}: mask is {mask.shape[0]}x{mask.shape[1]} but "
                f"the image is {image.shape[0]}x{image.shape[1]}"
            )
        if stem in self.info.mask_files:
            _check_values(mask, len(self.info.classes), self.config.ignore_index,
                          self.info.mask_files[stem], self.info.classes)  # fmt: skip
        k = len(self.info.classes)
        instances, distance, rays, weighed = None, None, None, mask
        if self.boundary_width > 0:
            instances = self._instances(stem, mask.shape)
            mask, weighed, distance, rays = self._instance_targets(stem, mask, instances)
            k += 1 if self.instance_head in ("boundary", "offsets") else 0  # boundary class
        weight = None
        if self.weight_fn is not None:
            extra = () if instances is None else (instances,)
            weight = np.asarray(self.weight_fn(weighed, *extra), dtype=np.float32)
        box = self.regions.get(stem)
        if box is not None:  # after the weight map: its distances see every object
            mask = hide_labels(mask, box, self.config.ignore_index, inside=self.train)
        points = _class_points(mask, k, stem) if self.train else {}
        if self._cache_ok:
            arrays = (image, mask, weight, distance, *(rays or ()))
            item_bytes = sum(a.nbytes for a in arrays if a is not None)
            budget = min(2**31, available_memory() // 4)
            if item_bytes * len(self._stems) <= budget:
                self._cache[stem] = (image, mask, weight, distance, rays, points)
            else:
                self._cache_ok = False
                log.info("dataset does not fit the cache budget (%d MiB); reading from disk",
                         budget >> 20)  # fmt: skip
        return image, mask, weight, distance, rays, points

    def _instance_targets(self, stem: str, mask: np.ndarray, instances: np.ndarray):
        """The instance head's targets: (mask, what the weight map is computed from, distance
        map or None, ray table or None)."""
        areas = np.bincount(instances.ravel())[1:]
        self.object_areas[stem] = areas[areas > 0]
        k, ignore = len(self.info.classes), self.config.ignore_index
        if self.instance_head in ("boundary", "offsets"):
            mask = boundary_target(
                mask, instances, k, self.boundary_width, ignore, self.boundary_fraction
            )
            if self.instance_head == "offsets":
                from .offsets import offset_table

                return mask, mask, None, offset_table(instances)
            return mask, mask, None, None
        # distance and rays: the data's classes and the normalised distance (and the rays)
        weighed = boundary_target(mask, instances, k, 1, ignore)
        rays = None
        if self.instance_head == "rays":
            from .rays import ray_table

            rays = ray_table(instances, self.n_rays)
            self.ray_lengths[stem] = (float(rays[1].sum(dtype=np.float64)), rays[1].size)
        return mask, weighed, object_distance(instances), rays

    def _instances(self, stem: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.info.instance_files.get(stem)
        if path is None:
            raise UnetkitError(f"{self.info.root}: no instance labels for {stem} in instances/")
        instances = read_instances(path)
        if instances.shape != tuple(shape):
            raise UnetkitError(
                f"{path}: instances are {instances.shape[0]}x{instances.shape[1]} but the "
                f"mask is {shape[0]}x{shape[1]}"
            )
        return instances

    def raw(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole (H, W, C) image and (H, W) class mask of ``stem``, as loaded (cached)."""
        image, mask = self._load(stem)[:2]
        return image, mask

    def _stats(self, stem: str, image: np.ndarray):
        """Per-image normalisation statistics of the whole image (cached per stem)."""
        key = (stem, self.config.normalize)
        if key not in self._stats_cache:
            self._stats_cache[key] = normalization_stats(image, self.config)
        return self._stats_cache[key]

    def check_all(self) -> None:
        """Read every sample once (filling the cache when it fits), so that a bad file stops
        training before it starts rather than at its first batch.

        Raises:
            UnetkitError: naming the first unreadable image or mask, a size mismatch, or mask
                values outside the classes.
        """
        for stem in self._stems:
            self._load(stem)

    def _geometry(self, index: int, epoch: int, image, mask, weight, distance, rays, points):
        """The item's window (or resized copy) of each array; the rays' index (``ray_table``)
        is windowed like the mask, -1 where padded."""
        cfg, ignore = self.config, self.config.ignore_index
        size = cast("tuple[int, int]", tuple(cfg.size))
        ray_index = None if rays is None else rays[0]
        if ray_index is not None and cfg.resize in ("letterbox", "resize"):
            raise UnetkitError(_NO_RESIZED_RAYS.format(cfg.resize))
        if cfg.resize == "letterbox":
            image = letterbox(image, size, nearest=False)[0]
            mask = letterbox(mask, size, nearest=True, fill=ignore)[0]
            weight = None if weight is None else letterbox(weight, size, nearest=False)[0]
            distance = None if distance is None else letterbox(distance, size, nearest=False)[0]
        elif cfg.resize == "resize":
            image, mask = resize_to(image, size, False)[0], resize_to(mask, size, True)[0]
            weight = None if weight is None else resize_to(weight, size, False)[0]
            distance = None if distance is None else resize_to(distance, size, False)[0]
        elif cfg.resize == "random-crop" and self.train:
            mask_h, mask_w = mask.shape
            image, mask = _pad_to(image, size, None), _pad_to(mask, size, ignore)
            weight = None if weight is None else _pad_to(weight, size, 0.0)
            distance = None if distance is None else _pad_to(distance, size, 0.0)
            ray_index = None if ray_index is None else _pad_to(ray_index, size, -1)
            rng = np.random.default_rng((self.seed, epoch, index))
            top = int(rng.integers(0, image.shape[0] - size[0] + 1))
            left = int(rng.integers(0, image.shape[1] - size[1] + 1))
            if points and rng.random() < cfg.oversample:  # centred on a foreground pixel
                chosen = points[sorted(points)[int(rng.integers(len(points)))]]
                y, x = chosen[int(rng.integers(len(chosen)))]
                y += (image.shape[0] - mask_h) // 2  # the padding added above (centred)
                x += (image.shape[1] - mask_w) // 2
                top = int(np.clip(y - size[0] // 2, 0, image.shape[0] - size[0]))
                left = int(np.clip(x - size[1] // 2, 0, image.shape[1] - size[1]))
            box = (slice(top, top + size[0]), slice(left, left + size[1]))
            image, mask = image[box], mask[box]
            weight = None if weight is None else weight[box]
            distance = None if distance is None else distance[box]
            ray_index = None if ray_index is None else ray_index[box]
        if ray_index is not None:  # a rays or offsets table's window, made dense
            from .offsets import table_rows

            rays = table_rows(ray_index, rays[1])
        return image, mask, weight, distance, rays

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Sample ``key``: ``image`` float32 (C, H, W), ``mask`` int64 (H, W), ``stem``,
        ``weight`` float32 (H, W) when a ``weight_fn`` is set, ``distance`` float32 (H, W)
        for the ``distance`` and ``rays`` instance heads, and ``rays`` float32 (H, W, n_rays),
        rays last, for the ``rays`` head; ``offsets`` float32 (H, W, 2) for the ``offsets`` head.

        ``key`` is an index (its crop that of the epoch ``set_epoch`` chose) or an
        ``(epoch, index)`` pair: what a data-loading process that lives across epochs gets.
        """
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        stem = self.stem_of(index)
        loaded = self._load(stem)
        stats = self._stats(stem, loaded[0])  # of the whole image, never of the crop
        image, mask, weight, distance, rays = self._geometry(index, epoch, *loaded)
        item = {
            "image": image_to_tensor(image, self.config, stats),
            "mask": torch.from_numpy(np.array(mask, dtype=np.int64)),  # a copy: cache stays intact
            "stem": stem,
        }
        if weight is not None:
            item["weight"] = torch.from_numpy(np.array(weight, dtype=np.float32))
        if distance is not None:
            item["distance"] = torch.from_numpy(np.array(distance, dtype=np.float32))
        if rays is not None:
            item["offsets" if self.instance_head == "offsets" else "rays"] = torch.from_numpy(rays)
        return item
