"""Dataset folders: recognise the layout, pair images with masks by stem, read the classes.

Accepted layouts (first match wins):

* ``unetkit``: a ``prepare`` output (``classes.txt`` + ``dataset.json``, ``images/`` + ``masks/``)
* ``voc``: ``JPEGImages/`` + ``SegmentationClass/`` (labelme2voc, seed 004)
* ``imgs-masks``: ``imgs/`` + ``masks/`` where a mask is named ``<stem><suffix>.<ext>``
* ``images-masks``: ``images/`` + ``masks/`` with identical stems (e.g. ISBI 2012)
* ``images-only``: plain images for image-to-image training (:func:`describe_images`)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UnetkitError
from ..viz import make_palette
from .imageio import read_image, read_mask

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")
CLASS_FILES = ("classes.txt", "class_names.txt", "label_names.txt", "labels.txt")
LAYOUTS = {
    "unetkit": ("images", "masks"),
    "voc": ("JPEGImages", "SegmentationClass"),
    "imgs-masks": ("imgs", "masks"),
    "images-masks": ("images", "masks"),
}
ACCEPTED = (
    "a prepare output (classes.txt + dataset.json + images/ + masks/), "
    "VOC (JPEGImages/ + SegmentationClass/), imgs/ + masks/ (with a mask suffix), "
    "images/ + masks/"
)


@dataclass
class DatasetInfo:
    """Everything known about a dataset folder before loading pixels.

    Attributes:
        root: the folder.
        layout: ``unetkit``, ``voc``, ``imgs-masks`` or ``images-masks``.
        image_dir, mask_dir: the two sub-folders.
        mask_suffix: text between a stem and the mask's extension (``imgs-masks``).
        stems: paired stems, sorted.
        classes: class names, index = mask value.
        palette: RGB colour per class.
        ignore_index: mask value excluded from losses and metrics.
        split: ``{"train": [...], "val": [...]}`` when the folder defines one.
        class_share: pixel share per class when known (``dataset.json``).
        channels: channel count of the images (of the first image if they differ).
        image_files, mask_files: stem -> file path.
        binary_255: masks are 0/255 and map to classes 0/1.
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


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _guess_suffix(image_dir: Path, mask_dir: Path) -> str:
    """The mask suffix shared by the first image whose mask name starts with its stem."""
    masks = [p.stem for p in _files(mask_dir)]
    for image in _files(image_dir)[:20]:
        longer = [m for m in masks if m.startswith(image.stem)]
        if image.stem in masks:
            return ""
        if longer:
            return min(longer, key=len)[len(image.stem) :]
    return ""


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
            suffix = _guess_suffix(root / images, root / masks) if layout == "imgs-masks" else ""
        return layout, suffix
    raise UnetkitError(f"{root}: unrecognised dataset layout; expected {ACCEPTED}")


def pair_files(
    image_dir: Path, mask_dir: Path, mask_suffix: str = ""
) -> tuple[dict[str, tuple[Path, Path]], list[Path], list[Path]]:
    """Pair images with masks by stem.

    Returns:
        (stem -> (image, mask), images without a mask, masks without an image).
    """
    images = {p.stem: p for p in _files(image_dir)}
    masks: dict[str, Path] = {}
    orphans: list[Path] = []
    for p in _files(mask_dir):
        stem = p.stem
        if mask_suffix and stem.endswith(mask_suffix):
            stem = stem[: -len(mask_suffix)]
        # prefer PNG when a stem has several masks (e.g. .png beside a lossy .jpg)
        if stem in masks and masks[stem].suffix.lower() == ".png":
            orphans.append(p)
            continue
        if stem in masks:
            orphans.append(masks[stem])
        masks[stem] = p
    pairs = {s: (images[s], masks[s]) for s in sorted(images.keys() & masks.keys())}
    lonely_images = [images[s] for s in sorted(images.keys() - masks.keys())]
    lonely_masks = orphans + [masks[s] for s in sorted(masks.keys() - images.keys())]
    return pairs, lonely_images, lonely_masks


def read_class_file(path: Path) -> list[str]:
    """Class names from a text file (labelme convention: ``__ignore__`` dropped)."""
    names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
    return [n for n in names if n != "__ignore__"]


def _infer_classes(mask_files: list[Path], ignore_index: int) -> tuple[list[str], bool]:
    """Classes from the mask values: 0/255 -> binary; else background + class1..classN."""
    values: set[int] = set()
    step = max(1, len(mask_files) // 200)  # large sets: a spread-out sample of 200 masks
    for path in mask_files[::step]:
        values.update(np.unique(read_mask(path)).tolist())
    if values <= {0, 255} and 255 in values:
        return ["background", "class1"], True
    top = max(values - {ignore_index}, default=0)
    return ["background", *[f"class{v}" for v in range(1, top + 1)]], False


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

    Without a classes file the classes are inferred from the mask values (logged): 0/255
    masks give ``["background", "class1"]`` with the binary mapping, other values
    ``background`` plus ``class1`` .. ``classN``.

    Args:
        root: the folder.
        mask_suffix: mask name suffix for ``imgs/`` + ``masks/`` (guessed when None).

    Returns:
        A :class:`DatasetInfo`.

    Raises:
        UnetkitError: unrecognised layout, no pairs, unreadable metadata.
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
    if meta.get("classes"):
        classes = list(meta["classes"])
    elif class_file is not None:
        classes = read_class_file(class_file)
        if len(classes) == 2:  # a 0/255 binary set with a classes file
            binary = set(np.unique(read_mask(masks[0])).tolist()) == {0, 255}
    else:
        classes, binary = _infer_classes(masks, ignore_index)
        log.info("%s: no classes file; classes inferred from the masks: %s", root, classes)
    palette = meta.get("palette") or make_palette(len(classes))
    channels = meta.get("channels")
    if not isinstance(channels, int):
        channels = read_image(next(iter(pairs.values()))[0]).shape[2]
    split = meta.get("split") or (_voc_split(root) if layout == "voc" else None)
    return DatasetInfo(
        root=root, layout=layout, image_dir=image_dir, mask_dir=mask_dir, mask_suffix=suffix,
        stems=list(pairs), classes=classes, palette=[list(c) for c in palette],
        ignore_index=ignore_index, split=split, class_share=meta.get("class_share"),
        channels=int(channels), image_files={s: p[0] for s, p in pairs.items()},
        mask_files={s: p[1] for s, p in pairs.items()}, binary_255=binary,
    )  # fmt: skip


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
    files = {p.stem: p for p in _files(image_dir)}
    if not files:
        raise UnetkitError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    channels = read_image(next(iter(files.values()))).shape[2]
    return DatasetInfo(
        root=root, layout="images-only", image_dir=image_dir, mask_dir=image_dir, mask_suffix="",
        stems=sorted(files), classes=["image"], palette=[[0, 0, 0]], ignore_index=255,
        split=None, class_share=None, channels=int(channels), image_files=files, mask_files={},
        binary_255=False,
    )  # fmt: skip
