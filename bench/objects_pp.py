"""Post-processing time of each instance head against image size (issue 24, build 2).

The maps a perfect model of each head would predict (``truth_maps`` of
``bench/dsb_instances.py``) for a canvas of 1024^2, 2048^2 and 4096^2 pixels tiled with the
DSB 2018 dev instance images (a 1024^2 block of every image of the set in turn, repeated
to the size, ids offset so each object is its own: the same content per pixel at every
size), with Gaussian noise of ``--noise`` added to every probability channel (and to the
offsets head's offsets) and the rays head's ray lengths scaled by N(1, 3 ``--noise``) (a
trained model's maps are never clean).
Each head's ``separate_objects`` runs on the whole canvas, best of ``--repeat``; the table
gives seconds, microseconds per pixel and the ratio of the per-pixel time to that at the
smallest size: 1.0 means time grows linearly with pixels.

    python bench/objects_pp.py
    python bench/objects_pp.py --sizes 1024 2048 4096 8192 --heads boundary
    python bench/objects_pp.py --heads boundary distance rays
    python bench/objects_pp.py --heads boundary offsets
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dsb import DATA
from dsb_instances import truth_maps


def block(side: int) -> np.ndarray:
    """A side x side instance image tiled with the dev set's instance images, row by row."""
    from unetkit.data.instances import read_instances

    out = np.zeros((side, side), np.int32)
    stems = sorted(p.stem for p in (DATA / "instances").glob("*.png"))
    y = x = row_h = 0
    next_id = 0
    i = 0
    while y < side:
        labels = read_instances(DATA / "instances" / f"{stems[i % len(stems)]}.png")
        i += 1
        h, w = min(labels.shape[0], side - y), min(labels.shape[1], side - x)
        piece = labels[:h, :w].astype(np.int32)
        out[y : y + h, x : x + w] = np.where(piece > 0, piece + next_id, 0)
        next_id += int(piece.max())
        row_h = max(row_h, h)
        x += w
        if x >= side:
            x, y, row_h = 0, y + row_h, 0
    return out


def canvas(side: int, unit: int = 1024) -> np.ndarray:
    """``block(unit)`` repeated to side x side (ids offset per copy): the same content per
    pixel at every size, so per-pixel times compare."""
    base = block(unit)
    reps = -(-side // unit)
    count = int(base.max())
    out = np.zeros((reps * unit, reps * unit), np.int32)
    for i in range(reps):
        for j in range(reps):
            copy = np.where(base > 0, base + (i * reps + j) * count, 0)
            out[i * unit : (i + 1) * unit, j * unit : (j + 1) * unit] = copy
    return out[:side, :side]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--heads", nargs="*", default=["boundary", "distance"])
    parser.add_argument("--noise", type=float, default=0.05, help="std of the added noise")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from unetkit.config import ObjectConfig
    from unetkit.objects.postprocess import separate_objects

    rng = np.random.default_rng(0)
    rows = []
    for side in args.sizes:
        truth = canvas(side)
        for head in args.heads:
            maps = truth_maps(truth, head).astype(np.float32)
            probs = maps[:3]  # the rays head's ray lengths follow, in pixels; or the offsets
            probs += rng.normal(0, args.noise, probs.shape).astype(np.float32)
            np.clip(probs, 0, 1, out=probs)
            if head == "rays":
                rays = maps[3:]
                rays *= rng.normal(1, 3 * args.noise, rays.shape).astype(np.float32)
                np.clip(rays, 0, None, out=rays)
            if head == "offsets":
                maps[3:] += rng.normal(0, args.noise, maps[3:].shape).astype(np.float32)
            cfg = ObjectConfig(head=head)
            best = np.inf
            for _ in range(args.repeat):
                start = time.perf_counter()
                _, labels = separate_objects(maps, cfg)
                best = min(best, time.perf_counter() - start)
            rows.append((head, side, best, len(np.unique(truth)) - 1, int(labels.max())))
    print(f"{'head':<10}{'side':>6}{'objects':>9}{'found':>8}{'s':>8}{'us/px':>8}{'vs first':>9}")
    first: dict[str, float] = {}
    for head, side, seconds, n_true, n_found in rows:
        per_px = seconds / side**2 * 1e6
        first.setdefault(head, per_px)
        print(f"{head:<10}{side:>6}{n_true:>9}{n_found:>8}{seconds:>8.2f}{per_px:>8.3f}"
              f"{per_px / first[head]:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
