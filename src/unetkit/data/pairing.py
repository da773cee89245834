"""Which files of a dataset folder are images, and which image goes with which mask (or
instance file): by stem, a mask's suffix (``imgs/`` + ``masks/``) removed first."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")


def list_images(folder: Path) -> list[Path]:
    """The files of ``folder`` with an image suffix (:data:`IMAGE_SUFFIXES`), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def guess_mask_suffix(image_dir: Path, mask_dir: Path) -> str:
    """The mask suffix shared by the first image whose mask name starts with its stem."""
    masks = [p.stem for p in list_images(mask_dir)]
    for image in list_images(image_dir)[:20]:
        longer = [m for m in masks if m.startswith(image.stem)]
        if image.stem in masks:
            return ""
        if longer:
            return min(longer, key=len)[len(image.stem) :]
    return ""


def pair_files(
    image_dir: Path, mask_dir: Path, mask_suffix: str = ""
) -> tuple[dict[str, tuple[Path, Path]], list[Path], list[Path]]:
    """Pair images with masks by stem.

    Returns:
        (stem -> (image, mask), images without a mask, masks without an image).
    """
    images = {p.stem: p for p in list_images(image_dir)}
    masks: dict[str, Path] = {}
    orphans: list[Path] = []
    for p in list_images(mask_dir):
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


def instance_files(root: Path, stems: list[str]) -> dict[str, Path]:
    """``root/instances/STEM.*`` for the paired stems (PNG preferred), if the folder exists."""
    folder = root / "instances"
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    wanted = set(stems)
    for path in list_images(folder):
        if path.stem in wanted and (path.stem not in found or path.suffix.lower() == ".png"):
            found[path.stem] = path
    return dict(sorted(found.items()))
