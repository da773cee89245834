"""Copy-paste composites of the DSB training images: more touching nuclei to learn from.

"Simple Copy-Paste" (Ghiasi et al., CVPR 2021) pastes objects of one image into another as an
augmentation for instance segmentation. Here each composite is one training image with some of
its own nuclei pasted again right beside other nuclei of it, so that they touch: what the
boundary head must learn to separate, and what the DSB images hold few of. A pasted nucleus goes
behind the nuclei already there (it only covers background), keeps its own pixels and is kept
only where most of it stays visible. Composites are written as ``STEM_cpK`` beside links to the
originals (``images/``, ``masks/``, ``instances/``), so the folder trains like the original::

    python bench/copy_paste.py OUT --variants 1
    python bench/dsb_instances.py --budget 15 --recipes instance-cp,instance --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from dsb import DATA, split
from dsb_instances import link_dataset


def composite(
    image: np.ndarray,
    instances: np.ndarray,
    rng: np.random.Generator,
    fraction: float = 0.5,
    visible: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with about ``fraction`` of its nuclei pasted again, each touching another.

    Returns:
        (the composite image, its instance labels: the originals' ids, then new ids).
    """
    image, labels = image.copy(), instances.astype(np.int32, copy=True)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if len(ids) < 1:
        return image, labels
    boxes = ndimage.find_objects(instances)
    centres = ndimage.center_of_mass(np.ones_like(instances), instances, ids)
    areas = ndimage.sum_labels(np.ones_like(instances), instances, ids)
    radius = np.sqrt(np.asarray(areas) / np.pi)
    h, w = instances.shape
    next_id = int(labels.max()) + 1
    for _ in range(max(1, round(fraction * len(ids)))):
        src, anchor = rng.integers(len(ids), size=2)
        box = boxes[ids[src] - 1]
        if box is None:
            continue
        piece = instances[box] == ids[src]
        pixels = image[box]
        if rng.random() < 0.5:  # a mirror, so the copy is not the original's twin
            piece, pixels = piece[:, ::-1], pixels[:, ::-1]
        angle = rng.uniform(0, 2 * np.pi)
        reach = (radius[src] + radius[anchor]) * rng.uniform(0.85, 1.05)
        cy = centres[anchor][0] + reach * np.sin(angle)
        cx = centres[anchor][1] + reach * np.cos(angle)
        # the piece's own centre within its box
        py, px = (np.argwhere(piece).mean(0)).tolist()
        top, left = round(cy - py), round(cx - px)
        ph, pw = piece.shape
        if top < 0 or left < 0 or top + ph > h or left + pw > w:
            continue
        region = (slice(top, top + ph), slice(left, left + pw))
        free = piece & (labels[region] == 0)
        if free.sum() < visible * piece.sum():
            continue
        image[region][free] = pixels[free]
        labels[region][free] = next_id
        next_id += 1
    return image, labels


def build(out: Path, stems: list[str], variants: int, seed: int = 0) -> Path:
    """``out/{images,masks,instances}``: links to ``stems`` plus ``variants`` composites each."""
    rng = np.random.default_rng(seed)
    link_dataset(out, stems)
    for stem in stems:
        image = np.array(Image.open(DATA / "images" / f"{stem}.png"))
        instances = np.array(Image.open(DATA / "instances" / f"{stem}.png")).astype(np.int32)
        for k in range(variants):
            img, lab = composite(image, instances, rng)
            name = f"{stem}_cp{k}.png"
            Image.fromarray(img).save(out / "images" / name)
            Image.fromarray((lab > 0).astype(np.uint8)).save(out / "masks" / name)
            Image.fromarray(lab.astype(np.uint16)).save(out / "instances" / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, _, _ = split()
    build(args.out, train, args.variants, args.seed)
    print(f"{len(train)} images and {len(train) * args.variants} composites in {args.out}")


if __name__ == "__main__":
    main()
