"""Annotation style per image (DSB 2018 dev): where each annotated edge lies on the image's
brightness profile, and each test image's predicted / true foreground for trained runs.

For one imaging group (default ``fluo_256x256``), per image of the fixed split of
``bench/dsb.py``: the foreground share, Otsu's foreground over the true one, and the median
brightness of the annotation's inner edge pixels (and of the ring just outside it) on a scale
where 0 is the background's median (3 px away from any object) and 1 the median of the
objects' cores (3 px inside). Loose outlines (drawn beyond the visible edge) score low, tight
ones high. Then, for each run folder given, predicted / true foreground and Dice per test
image of the group (``best.pt``, argmax, whole images)::

    python bench/dsb_style.py
    python bench/dsb_style.py --group fluo_640x512 --runs DIR/n008_seed0 DIR/n070_seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from dsb import DATA, otsu_mask, split


def edge_position(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Median brightness of the mask's inner edge pixels and of the ring just outside it,
    0 at the background's median, 1 at the objects' cores' median (1/99.8 percentile range)."""
    grey = image.mean(-1) if image.ndim == 3 else image.astype(np.float32)
    low, high = np.percentile(grey, (1, 99.8))
    grey = (grey - low) / max(high - low, 1e-6)
    core = ndimage.binary_erosion(truth, iterations=3)
    background = ~ndimage.binary_dilation(truth, iterations=3)
    inner = truth & ~ndimage.binary_erosion(truth)
    outer = ndimage.binary_dilation(truth) & ~truth
    c, b = np.median(grey[core]), np.median(grey[background])
    inside, outside = (float((np.median(grey[m]) - b) / (c - b)) for m in (inner, outer))
    return inside, outside


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", default="fluo_256x256", help="imaging group")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="run folders")
    args = parser.parse_args()
    from unetkit import PredictConfig, Predictor
    from unetkit.data.imageio import read_image, read_mask

    train, test, group_of = split()
    read = {}
    print(f"{args.group}: annotated edge on the brightness profile (0 background, 1 cores)")
    print("split  image       foreground  otsu/true  edge inside  ring outside")
    for name, stems in (("train", train), ("test", test)):
        for stem in (s for s in stems if group_of[s] == args.group):
            image = read_image(DATA / "images" / f"{stem}.png")
            truth = read_mask(DATA / "masks" / f"{stem}.png") > 0
            read[stem] = image, truth
            inner, outer = edge_position(image, truth)
            otsu = otsu_mask(image).sum() / truth.sum()
            print(f"{name:<6} {stem[:10]:<11} {truth.mean():>10.3f} {otsu:>10.2f} "
                  f"{inner:>12.2f} {outer:>13.2f}")  # fmt: skip
    shown = [s for s in test if group_of[s] == args.group]
    if args.runs:
        print("\npredicted / true foreground and Dice per test image")
        print(f"{'run':<16}" + "".join(f"{s[:3]:>12}" for s in shown))
    for run in args.runs:
        predictor = Predictor.from_checkpoint(run / "best.pt", PredictConfig())
        cells = []
        for stem in shown:
            image, truth = read[stem]
            mask = predictor.predict(image) > 0
            dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
            cells.append(f"{mask.sum() / truth.sum():.2f}/{dice:.3f}")
        print(f"{run.name:<16}" + "".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
