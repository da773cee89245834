"""Post-processing the ``offsets`` instance head: a sweep on the model's own validation images.

Predicts the probabilities of an ``--instance-head offsets`` checkpoint's own validation images
(the split recorded in the checkpoint; DSB stems of ``bench/dsb.py``'s data) and of the 19 test
images once (cached as ``.npy`` under ``--cache``), prints how the predicted offsets' split
lines (``unetkit.data.offsets.split_lines``) look where two true objects touch, inside the
true objects and on background, then sweeps the post-processing on the VALIDATION images only:
``distance_sigma`` (the offsets' smoothing), ``split_threshold`` (``inf``: the offsets unused,
i.e. the boundary head's post-processing of the same network), ``seed_threshold`` and
``min_score``; the best setting by AP@0.5 (mean AP breaks ties) is scored once on the test
images beside the stored setting and the offsets-off one.

    python bench/offsets_pp.py /tmp/dsbi/instance-offsets/best.pt --cache /tmp/offpp
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distance_pp import HEADER, cache_probs, fmt_row, tally, truths  # noqa: E402
from dsb import split  # noqa: E402

_STATE: dict = {}
SIGMAS = (0.0, 1.0, 2.0)
SPLITS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, float("inf"))
SEEDS = (0.4, 0.5, 0.6, 0.7)
MIN_SCORES = (0.7, 0.8, 0.9)


def touching(truth: np.ndarray) -> np.ndarray:
    """Object pixels 4-adjacent to a pixel of another object."""
    out = np.zeros(truth.shape, bool)
    for axis in (0, 1):
        a, b = np.swapaxes(truth, 0, axis)[:-1], np.swapaxes(truth, 0, axis)[1:]
        meet = (a > 0) & (b > 0) & (a != b)
        view = np.swapaxes(out, 0, axis)
        view[:-1] |= meet
        view[1:] |= meet
    return out


def describe(probs: list[np.ndarray], truth: list[np.ndarray], sigma: float) -> None:
    """The split lines at the true contacts, inside the objects, on background."""
    from unetkit.data.offsets import object_offsets, split_lines

    parts: dict[str, list] = {k: [] for k in ("contact", "inside", "background", "true@contact")}
    corr = []
    for p, t in zip(probs, truth):
        lines = split_lines(p[-2:], sigma)
        contact = touching(t)
        inside = (t > 0) & ~ndimage.binary_dilation(contact, iterations=2)
        parts["contact"].append(lines[contact])
        parts["inside"].append(lines[inside])
        parts["background"].append(lines[t == 0])
        true_off = object_offsets(t)
        parts["true@contact"].append(split_lines(true_off, sigma)[contact])
        on = t > 0
        corr.append(np.corrcoef(true_off[:, on].ravel(), p[-2:][:, on].ravel())[0, 1])
    print(f"split lines at sigma {sigma:g} (offsets vs truth on object pixels: r = "
          f"{np.nanmean(corr):.2f})")  # fmt: skip
    for name, chunks in parts.items():
        v = np.concatenate(chunks)
        if v.size:
            q = np.percentile(v, [10, 50, 90])
            print(f"  {name:<14} n={v.size:>8}  p10 {q[0]:.3f}  median {q[1]:.3f}  "
                  f"p90 {q[2]:.3f}")  # fmt: skip


def _config(objects: dict, sigma: float, split_t: float, seed: float, ms: float):
    from unetkit.config import ObjectConfig

    head = "boundary" if split_t == float("inf") else "offsets"
    return ObjectConfig(**{**objects, "head": head, "distance_sigma": sigma,
                           "split_threshold": 0.0 if head == "boundary" else split_t,
                           "seed_threshold": seed, "min_score": ms})  # fmt: skip


def objects_of(p: np.ndarray, cfg) -> np.ndarray:
    from unetkit.objects.postprocess import separate_objects

    return separate_objects(p if cfg.head == "offsets" else p[:-2], cfg)[1]


def _sweep_one(params: tuple) -> tuple:
    cfg = _config(_STATE["objects"], *params)
    found = [objects_of(p, cfg) for p in _STATE["probs"]]
    return params, tally(found, _STATE["truth"])["all"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="the offsets head's best.pt")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/offpp"))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    from unetkit.checkpoint import load_checkpoint

    _, test, group_of = split()
    ckpt = load_checkpoint(args.checkpoint)
    val = list((ckpt.train_state or {})["data"]["val"])
    objects = dict(ckpt.extra["objects"])
    print(f"{args.checkpoint}: {len(val)} val images; stored {objects}")
    start = time.monotonic()
    probs = {"val": cache_probs(args.checkpoint, val, args.cache, "val"),
             "test": cache_probs(args.checkpoint, test, args.cache, "test")}  # fmt: skip
    truth = {"val": truths(val), "test": truths(test)}
    print(f"probabilities ready in {time.monotonic() - start:.0f} s")
    for sigma in SIGMAS:
        describe(probs["val"], truth["val"], sigma)

    grid = list(itertools.product(SIGMAS, SPLITS, SEEDS, MIN_SCORES))
    grid = [g for g in grid if g[1] != float("inf") or g[0] == SIGMAS[0]]
    _STATE.update(objects=objects, probs=probs["val"], truth=truth["val"])
    start = time.monotonic()
    with Pool(args.workers) as pool:
        rows = pool.map(_sweep_one, grid, chunksize=2)
    print(f"\nval: {len(rows)} settings in {time.monotonic() - start:.0f} s")
    ranked = sorted(rows, key=lambda r: (-round(r[1]["ap_50"], 4), -r[1]["map"]))
    print(HEADER)
    for params, s in ranked[: args.top]:
        print(fmt_row("s{:g} split {:g} seed {:g} ms{:g}".format(*params), s))
    off = [r for r in ranked if r[0][1] == float("inf")]
    print(fmt_row("best with offsets off: s{:g} split {:g} seed {:g} ms{:g}".format(*off[0][0])
                  [:34], off[0][1]))  # fmt: skip
    stored = (objects["distance_sigma"], objects["split_threshold"],
              objects["seed_threshold"], objects["min_score"])  # fmt: skip

    groups = [group_of[s] for s in test]
    chosen = {"val-best": ranked[0][0], "stored": stored, "offsets off (val-best)": off[0][0]}
    results = {}
    for name, params in chosen.items():
        cfg = _config(objects, *params)
        found = [objects_of(p, cfg) for p in probs["test"]]
        results[f"{name} " + "s{:g} sp{:g} st{:g} ms{:g}".format(*params)] = tally(
            found, truth["test"], groups
        )
    print("\ntest images (19)")
    print(HEADER)
    for name, res in results.items():
        print(fmt_row(name[:34], res["all"]))
    print("\nper group, AP@0.5 / mean AP / merges")
    names = list(results)
    print(f"{'group':<24}" + "".join(f"{n[:22]:>24}" for n in names))
    for g in sorted(set(groups)):
        print(f"{g:<24}" + "".join(
            f"{results[n][g]['ap_50']:>9.3f}{results[n][g]['map']:7.3f}{results[n][g]['merges']:>8d}"
            for n in names))  # fmt: skip


if __name__ == "__main__":
    main()
