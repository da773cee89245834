"""Dataset folders: recognise the layout, read the classes and describe the folder.

Accepted layouts (first match wins); any of the first four may have ``instances/`` beside its
masks (uint16 object ids, 0 = background, named as the images):

* ``unetkit``: a ``prepare`` output (``classes.txt`` + ``dataset.json``, ``images/`` + ``masks/``)
* ``voc``: ``JPEGImages/`` + ``SegmentationClass/`` (labelme's ``labelme2voc.py`` output)
* ``imgs-masks``: ``imgs/`` + ``masks/`` where a mask is named ``<stem><suffix>.<ext>``
* ``images-masks``: ``images/`` + ``masks/`` with identical stems (e.g. ISBI 2012)
* ``images-instances``: ``images/`` + ``instances/`` and no ``masks/``: objects of one class,
  the class mask is ``instances > 0`` (classes ``background``, ``object``, or the two names of
  a classes file)
* ``images-only``: plain images for image-to-image training (:func:`describe_images`)

Which file pairs with which (by stem) is :mod:`unetkit.data.pairing`'s.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UnetkitError
from ..palette import make_palette
from .imageio import read_image, read_mask
from .instances import read_instances
from .pairing import IMAGE_SUFFIXES, guess_mask_suffix, instance_files, list_images, pair_files

log = logging.getLogger(__name__)

CLASS_FILES = ("classes.txt", "class_names.txt", "label_names.txt", "labels.txt")
LAYOUTS = {
    "unetkit": ("images", "masks"),
    "voc": ("JPEGImages", "SegmentationClass"),
    "imgs-masks": ("imgs", "masks"),
    "images-masks": ("images", "masks"),
    "images-instances": ("images", "instances"),
}
INSTANCES_ONLY = "images-instances"
OBJECT_CLASSES = ["background", "object"]
ACCEPTED = (
    "a prepare output (classes.txt + dataset.json + images/ + masks/), "
    "VOC (JPEGImages/ + SegmentationClass/), imgs/ + masks/ (with a mask suffix), "
    "images/ + masks/, images/ + instances/ (objects of one class)"
)


@dataclass
class DatasetInfo:
    """Everything known about a dataset folder before loading pixels.

    Read masks with :meth:`read_mask` and instances with :meth:`read_instances`: they apply
    the 0/255 mapping and derive the mask of an ``images-instances`` folder.

    Attributes:
        root: the folder.
        layout: ``unetkit``, ``voc``, ``imgs-masks``, ``images-masks`` or
            ``images-instances``.
        image_dir, mask_dir: the two sub-folders (``mask_dir`` is ``instances/`` for
            ``images-instances``).
        mask_suffix: text between a stem and the mask's extension (``imgs-masks``).
        stems: paired stems, sorted.
        classes: class names, index = mask value.
        palette: RGB colour per class.
        ignore_index: mask value excluded from losses and metrics.
        split: ``{"train": [...], "val": [...]}`` when the folder defines one.
        class_share: pixel share per class when known (``dataset.json``).
        channels: channel count of the images (of the first image if they differ).
        image_files, mask_files: stem -> file path (for ``images-instances`` the mask files
            are the instance files: see ``masks_from_instances``).
        binary_255: masks are 0/255 and map to classes 0/1.
        instance_files: stem -> instance label image (``instances/`` beside the masks:
            uint16 ids, 0 = background), for the stems that have one.
        masks_from_instances: the mask files are instance images and the class mask is
            ``ids > 0`` (``images-instances``).
    """

    root: Path
    layout: str
    image_dir: Path
    mask_dir: Path
    mask_suffix: str
    stems: list[str]
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int
    split: dict[str, list[str]] | None
    class_share: list[float] | None
    channels: int
    image_files: dict[str, Path] = field(default_factory=dict, repr=False)
    mask_files: dict[str, Path] = field(default_factory=dict, repr=False)
    binary_255: bool = False
    instance_files: dict[str, Path] = field(default_factory=dict, repr=False)
    masks_from_instances: bool = False

    def read_mask(self, stem: str, binary_255: bool = True) -> np.ndarray:
        """The class mask of ``stem``, wherever it comes from.

        Args:
            stem: a stem of ``stems``.
            binary_255: apply the 0/255 -> 0/1 mapping when the folder needs it
                (``DataConfig.binary_255``).

        Returns:
            (H, W) int64 class indices: the mask file's values (255 -> 1 for 0/255 masks), or
            ``ids > 0`` of the instance image for ``images-instances``.

        Raises:
            UnetkitError: an unknown stem or an unreadable file (one line naming it).
        """
        path = self.mask_files.get(stem)
        if path is None:
            raise UnetkitError(f"{self.root}: no mask for {stem!r}")
        if self.masks_from_instances:
            return (read_instances(path) > 0).astype(np.int64)
        mask = read_mask(path)
        return map_binary_255(mask) if self.binary_255 and binary_255 else mask

    def read_instances(self, stem: str) -> np.ndarray:
        """The instance label image of ``stem`` as (H, W) int32 ids, 0 = background.

        Raises:
            UnetkitError: ``stem`` has no file in ``instances/``, or it cannot be read.
        """
        path = self.instance_files.get(stem)
        if path is None:
            raise UnetkitError(f"{self.root}: no instance labels for {stem} in instances/")
        return read_instances(path)


def find_layout(root: str | os.PathLike, mask_suffix: str | None = None) -> tuple[str, str]:
    """Recognise a dataset folder.

    Returns:
        (layout name, mask suffix).

    Raises:
        UnetkitError: a missing folder or an unrecognised layout (lists the accepted ones).
    """
    root = Path(root)
    if not root.is_dir():
        raise UnetkitError(f"{root}: not a folder")
    for layout, (images, masks) in LAYOUTS.items():
        if not ((root / images).is_dir() and (root / masks).is_dir()):
            continue
        if layout == "unetkit" and not (root / "dataset.json").is_file():
            continue
        suffix = mask_suffix
        if suffix is None:
            imgs_masks = layout == "imgs-masks"
            suffix = guess_mask_suffix(root / images, root / masks) if imgs_masks else ""
        return layout, suffix
    raise UnetkitError(f"{root}: unrecognised dataset layout; expected {ACCEPTED}")


def read_class_file(path: Path) -> list[str]:
    """Class names from a text file (labelme convention: ``__ignore__`` dropped)."""
    names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
    return [n for n in names if n != "__ignore__"]


def map_binary_255(mask: np.ndarray) -> np.ndarray:
    """A 0/255 binary mask as classes 0/1 (255 -> 1; a new array, other values unchanged)."""
    return np.where(mask == 255, 1, mask)


def mask_values(path: Path) -> frozenset[int]:
    """The distinct values of one mask file, decoding it once.

    8-bit single-channel and palette masks (modes ``L`` / ``P``, whose pixel values
    :func:`~unetkit.data.imageio.read_mask` returns unchanged) are counted with Pillow's C
    histogram; any other mode, and any file Pillow cannot read that way, goes through
    ``read_mask`` (which names the file when it cannot be read).

    Raises:
        UnetkitError: an unreadable mask.
    """
    try:
        with Image.open(path) as img:
            if img.mode in ("L", "P"):
                return frozenset(v for v, n in enumerate(img.histogram()) if n)
    except Exception:  # read_mask below reports the problem in one line
        pass
    mask = read_mask(path)
    if mask.size and mask.min() >= 0 and mask.max() < 1 << 16:
        return frozenset(np.flatnonzero(np.bincount(mask.ravel())).tolist())
    return frozenset(np.unique(mask).tolist())


def all_mask_values(paths: list[Path]) -> dict[Path, frozenset[int]]:
    """:func:`mask_values` of every file (each decoded once)."""
    return {path: mask_values(path) for path in paths}


def decide_binary_255(values: dict[Path, frozenset[int]]) -> bool:
    """Whether a two-class set of masks stores its foreground as 255 (to map to class 1).

    The rule, over all masks together: no mask holds 255 -> no; every value is 0 or 255 ->
    yes; values other than 0, 1 and 255 -> no (class indices, 255 = ignore); a mask holding
    both 1 and 255 -> no (255 is the ignore index there). What remains is some masks 0/1 and
    others 0/255: an error naming one of each.

    Args:
        values: per mask file its distinct values (:func:`all_mask_values`).

    Raises:
        UnetkitError: masks that mix 0/1 and 0/255.
    """
    union = frozenset().union(*values.values())
    if 255 not in union:
        return False
    if union <= {0, 255}:
        return True
    if union - {0, 255} != {1} or any({1, 255} <= v for v in values.values()):
        return False
    with_255 = next(p for p, v in values.items() if 255 in v)
    with_1 = next(p for p, v in values.items() if 1 in v)
    raise UnetkitError(
        f"{with_255}: a 0/255 mask, but {with_1.name} is 0/1; store every mask the same way "
        "(0/1 or 0/255)"
    )


def _sorted_values(values: dict[Path, frozenset[int]]) -> list[int]:
    return sorted(frozenset().union(*values.values()))


def _infer_classes(
    root: Path, values: dict[Path, frozenset[int]], ignore_index: int
) -> tuple[list[str], bool]:
    """Classes from all the mask values: 0/255 -> binary; else background + class1..classN."""
    if decide_binary_255(values):
        log.info("%s: masks are 0/255: mapped to classes 0/1 (%d masks checked)", root, len(values))
        return ["background", "class1"], True
    found = _sorted_values(values)
    top = max(set(found) - {ignore_index}, default=0)
    classes = ["background", *[f"class{v}" for v in range(1, top + 1)]]
    log.info(
        "%s: no classes file; classes inferred from %d masks: values %s -> %s (ignore %d)",
        root, len(values), found, classes, ignore_index,
    )  # fmt: skip
    return classes, False


def _two_classes(
    root: Path, class_file: Path, values: dict[Path, frozenset[int]], ignore_index: int
) -> bool:
    """The 0/255 decision for a two-line classes file; values beyond class 1 are an error."""
    if decide_binary_255(values):
        log.info("%s: masks are 0/255: mapped to classes 0/1 (%d masks checked)", root, len(values))
        return True
    for path, found in values.items():
        bad = sorted(found - {0, 1, ignore_index})
        if bad:
            raise UnetkitError(
                f"{path}: mask value(s) {bad[:8]} outside the 2 classes of {class_file.name} "
                f"(0..1, ignore {ignore_index})"
            )
    log.info(
        "%s: masks are class indices 0/1 (values %s, ignore %d; %d masks checked)",
        root, _sorted_values(values), ignore_index, len(values),
    )  # fmt: skip
    return False


def _voc_split(root: Path) -> dict[str, list[str]] | None:
    sets = root / "ImageSets" / "Segmentation"
    found = {}
    for name in ("train", "val"):
        if (sets / f"{name}.txt").is_file():
            lines = (sets / f"{name}.txt").read_text(encoding="utf-8").split()
            found[name] = sorted(lines)
    return found or None


def _metadata(root: Path, layout: str) -> dict:
    if layout != "unetkit":
        return {}
    try:
        return json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UnetkitError(f"{root / 'dataset.json'}: unreadable ({exc})") from exc


def describe_dataset(root: str | os.PathLike, mask_suffix: str | None = None) -> DatasetInfo:
    """Recognise a dataset folder and read its class list, split and pairing.

    Without a classes file the classes are inferred from the values of every mask: 0/255
    masks give ``["background", "class1"]`` with the binary mapping, other values
    ``background`` plus ``class1`` .. ``classN`` (N = the largest value other than the ignore
    index). With a two-line classes file every mask is checked too: 0/255 masks get the binary
    mapping, values other than 0, 1 and the ignore index are an error. The rule for 0/255 is
    :func:`decide_binary_255`; what was decided is logged in one line. A ``prepare`` output
    (``dataset.json``) and a classes file of more than two names are not scanned (255 is the
    ignore index there). Each mask is decoded once (:func:`mask_values`).

    ``images/`` + ``instances/`` without ``masks/`` is one class of objects: the classes are
    ``["background", "object"]``, or the names of a two-line classes file, and
    :meth:`DatasetInfo.read_mask` gives ``ids > 0``; the instance images are not scanned.

    Args:
        root: the folder.
        mask_suffix: mask name suffix for ``imgs/`` + ``masks/`` (guessed when None).

    Returns:
        A :class:`DatasetInfo`.

    Raises:
        UnetkitError: unrecognised layout, no pairs, unreadable metadata or mask, masks that
            mix 0/1 and 0/255, values outside a two-line classes file, a classes file of
            other than two names beside ``instances/`` without ``masks/``.
    """
    root = Path(root)
    layout, suffix = find_layout(root, mask_suffix)
    image_dir, mask_dir = (root / d for d in LAYOUTS[layout])
    pairs, lonely_images, lonely_masks = pair_files(image_dir, mask_dir, suffix)
    if not pairs:
        raise UnetkitError(f"{root}: no image/mask pairs in {image_dir.name}/ and {mask_dir.name}/")
    if lonely_images or lonely_masks:
        log.warning(
            "%s: %d image(s) without mask and %d mask(s) without image are skipped "
            "(run `unetkit verify` for details)",
            root,
            len(lonely_images),
            len(lonely_masks),
        )
    meta = _metadata(root, layout)
    ignore_index = int(meta.get("ignore_index", 255))
    class_file = next((root / n for n in CLASS_FILES if (root / n).is_file()), None)
    masks = [m for _, m in pairs.values()]
    binary = False
    if layout == INSTANCES_ONLY:
        classes = _object_classes(root, class_file)
    elif meta.get("classes"):
        classes = list(meta["classes"])
    elif class_file is not None:
        classes = read_class_file(class_file)
        if len(classes) == 2:  # 0/1 or 0/255: decided from every mask
            binary = _two_classes(root, class_file, all_mask_values(masks), ignore_index)
    else:
        classes, binary = _infer_classes(root, all_mask_values(masks), ignore_index)
    palette = meta.get("palette") or make_palette(len(classes))
    channels = meta.get("channels")
    if not isinstance(channels, int):
        channels = read_image(next(iter(pairs.values()))[0]).shape[2]
    split = meta.get("split") or (_voc_split(root) if layout == "voc" else None)
    if layout == INSTANCES_ONLY:
        instances = {s: p[1] for s, p in pairs.items()}
    else:
        instances = instance_files(root, list(pairs))
    return DatasetInfo(
        root=root, layout=layout, image_dir=image_dir, mask_dir=mask_dir, mask_suffix=suffix,
        stems=list(pairs), classes=classes, palette=[list(c) for c in palette],
        ignore_index=ignore_index, split=split, class_share=meta.get("class_share"),
        channels=int(channels), image_files={s: p[0] for s, p in pairs.items()},
        mask_files={s: p[1] for s, p in pairs.items()}, binary_255=binary,
        instance_files=instances, masks_from_instances=layout == INSTANCES_ONLY,
    )  # fmt: skip


def _object_classes(root: Path, class_file: Path | None) -> list[str]:
    """The two classes of an ``images-instances`` folder: a classes file's, or the default."""
    if class_file is None:
        classes = list(OBJECT_CLASSES)
    else:
        classes = read_class_file(class_file)
        if len(classes) != 2:
            raise UnetkitError(
                f"{class_file}: {len(classes)} class names, but images/ + instances/ without "
                "masks/ has 2 (background and the objects' class); add masks/ for more classes"
            )
    log.info("%s: no masks/: class mask = instances > 0, classes %s", root, classes)
    return classes


def describe_images(root: str | os.PathLike) -> DatasetInfo:
    """An image-only folder (``root/images/`` or ``root`` itself) for image-to-image training.

    The images are their own targets (``restore`` / ``x3``); there are no masks or classes.

    Raises:
        UnetkitError: a missing folder or one without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise UnetkitError(f"{root}: not a folder")
    image_dir = root / "images" if (root / "images").is_dir() else root
    files = {p.stem: p for p in list_images(image_dir)}
    if not files:
        raise UnetkitError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    channels = read_image(next(iter(files.values()))).shape[2]
    return DatasetInfo(
        root=root, layout="images-only", image_dir=image_dir, mask_dir=image_dir, mask_suffix="",
        stems=sorted(files), classes=["image"], palette=[[0, 0, 0]], ignore_index=255,
        split=None, class_share=None, channels=int(channels), image_files=files, mask_files={},
        binary_255=False,
    )  # fmt: skip
