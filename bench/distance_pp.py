"""Seeding the ``distance`` instance head: a post-processing sweep on the model's own val images.

Issue 24: a 15-minute ``--instance-head distance`` model of ``bench/dsb_instances.py`` split
the DSB 2018 test nuclei 313 times (the boundary head 22). This script predicts the
probabilities of the checkpoints' own validation images (the split recorded in the
checkpoint; DSB stems, read from ``bench/dsb.py``'s data) and of the 19 test images once
(cached as ``.npy`` under ``--cache``), prints how the predicted distance looks inside the
true objects, sweeps seedings of the watershed on the VALIDATION images only, picks the best
setting for each head, and scores that one setting on the test images. The distance head's
choice: the best val AP@0.5 (mean AP breaks ties) among the settings that lose nothing on
PERFECT maps of the same val images (the true objects' ``object_distance``, what a fully
trained head would give: AP@0.5 and mean AP at least those of the previous threshold
seeding), so that a setting fitted to this model's flat map cannot cost a better model its
exact separation:

* distance head: seeds where the (Gaussian-smoothed, ``sigma``) distance exceeds a threshold
  (``thr``), where distance x object probability does (``prod``), h-maxima of the smoothed
  distance (``hmax``), local maxima at least ``min_distance`` apart within each object region
  (``peaks``), or above a fraction of each object region's own maximum (``rel``); seed
  regions under ``seed_min`` px dropped; the watershed floods the smoothed negative distance;
  then the package's hole filling, ``min_size`` and ``min_score``;
* boundary head: its own knobs, ``seed_threshold`` and ``min_score``
  (``separate_objects``).

    python bench/distance_pp.py /tmp/dsbi-dist/instance-distance/best.pt \\
        /tmp/dsbi-dist/instance/best.pt --cache /tmp/distpp
    python bench/distance_pp.py DIST.pt BOUNDARY.pt --package   # + separate_objects' defaults
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
from dsb import DATA, split  # noqa: E402

MIN_SCORES = (0.6, 0.7, 0.8, 0.9)
_STATE: dict = {}


def cache_probs(ckpt: Path, stems: list[str], cache: Path, tag: str) -> list[np.ndarray]:
    """Each image's ``Predictor.predict_proba``, predicted once and kept in ``cache``."""
    from unetkit import Predictor
    from unetkit.data.imageio import read_image

    cache.mkdir(parents=True, exist_ok=True)
    predictor = None
    out = []
    for stem in stems:
        path = cache / f"{tag}-{stem}.npy"
        if not path.is_file():
            predictor = predictor or Predictor.load(ckpt)
            np.save(path, predictor.predict_proba(read_image(DATA / "images" / f"{stem}.png")))
        out.append(np.load(path))
    return out


def truths(stems: list[str]) -> list[np.ndarray]:
    from unetkit.data.instances import read_instances

    return [read_instances(DATA / "instances" / f"{s}.png") for s in stems]


def describe(probs: list[np.ndarray], truth: list[np.ndarray], names: list[str]) -> None:
    """How the predicted distance looks inside the true objects, per imaging group."""
    from unetkit.data.targets import object_distance

    rows: dict[str, dict[str, list]] = {}
    for p, t, g in zip(probs, truth, names):
        d, inside = p[-1], t > 0
        true_d = object_distance(t)
        row = rows.setdefault(g, {k: [] for k in ("r", "centre", "mid", "edge", "peak", "segs")})
        row["r"].append(np.corrcoef(true_d[inside], d[inside])[0, 1])
        row["centre"].append(d[inside & (true_d > 0.8)])
        row["mid"].append(d[inside & (true_d > 0.3) & (true_d < 0.6)])
        row["edge"].append(d[inside & (true_d < 0.2)])
        ids = np.arange(1, int(t.max()) + 1)
        row["peak"].append(np.asarray(ndimage.maximum(d, t, ids)))
        seeds, _ = ndimage.label((p[0] < 0.5) & (d > 0.5))
        pairs = np.unique(np.stack([t[seeds > 0], seeds[seeds > 0]]), axis=1)
        row["segs"].append(np.bincount(pairs[0], minlength=ids.size + 1)[1:])
    print(
        f"{'group':<12}{'corr':>6}{'d@centre':>10}{'sd':>6}{'d@mid':>7}{'d@edge':>8}"
        f"{'peak p50':>9}{'peak<.5':>8}{'2+ seeds':>9}  (true distance >0.8 / 0.3-0.6 / <0.2)"
    )
    for g, row in rows.items():
        c, m, e = (np.concatenate(row[k]) for k in ("centre", "mid", "edge"))
        peak, segs = np.concatenate(row["peak"]), np.concatenate(row["segs"])
        print(
            f"{g:<12}{np.mean(row['r']):6.2f}{c.mean():10.2f}{c.std():6.2f}{m.mean():7.2f}"
            f"{e.mean():8.2f}{np.median(peak):9.2f}{np.mean(peak < 0.5):8.2f}"
            f"{np.mean(segs >= 2):9.2f}"
        )


def distance_seeds(p: np.ndarray, ds: np.ndarray, objects: np.ndarray, params: tuple):
    """Labelled seeds of one seeding (``params`` = family, sigma, value, seed_min)."""
    from skimage.feature import peak_local_max
    from skimage.morphology import h_maxima

    family, _, value, seed_min = params
    if family == "thr":
        seeds, count = ndimage.label(objects & (ds > value))
    elif family == "prod":
        seeds, count = ndimage.label(objects & (ds * (1 - p[0]) > value))
    elif family == "rel":
        regions, n = ndimage.label(objects)
        top = np.zeros(n + 1, np.float32)
        if n:
            top[1:] = ndimage.maximum(ds, regions, np.arange(1, n + 1))
        seeds, count = ndimage.label(objects & (ds > value * top[regions]))
    elif family == "hmax":
        seeds, count = ndimage.label(objects & h_maxima(ds, value).astype(bool))
    elif family == "peaks":
        regions, _ = ndimage.label(objects)
        peaks = peak_local_max(ds, min_distance=int(value), labels=regions, exclude_border=False)
        seeds = np.zeros(ds.shape, np.int32)
        seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        count = len(peaks)
    else:
        raise ValueError(family)
    if seed_min > 1 and count:
        small = np.bincount(seeds.ravel(), minlength=count + 1) < seed_min
        small[0] = False
        seeds[small[seeds]] = 0
    return seeds


def distance_objects(p: np.ndarray, params: tuple, min_size: int) -> np.ndarray:
    """Object ids before ``min_score``: ``separate_objects``'s distance branch with the
    seeding of ``params`` (``thr`` / sigma 0 / 0.5 / 0 is that branch's own)."""
    from skimage.segmentation import watershed

    from unetkit.objects.postprocess import _drop_weak_and_small, _fill_holes

    sigma = params[1]
    objects = (1.0 - p[0]) > 0.5
    ds = ndimage.gaussian_filter(p[-1], sigma) if sigma else p[-1]
    seeds = distance_seeds(p, ds, objects, params)
    labels = watershed(-ds, markers=seeds, mask=objects).astype(np.int32)
    unseeded = objects & (labels == 0)
    if unseeded.any():
        extra, _ = ndimage.label(unseeded)
        labels[extra > 0] = extra[extra > 0] + int(labels.max())
    labels = _fill_holes(labels)
    return _drop_weak_and_small(labels, 1.0 - p[0], min_size, 0.0)


def tally(found: list[np.ndarray], truth: list[np.ndarray], groups: list[str] | None = None):
    from unetkit.objects.metrics import ObjectTally

    tallies: dict[str, ObjectTally] = {}
    for i, (f, t) in enumerate(zip(found, truth)):
        for key in ["all"] + ([groups[i]] if groups else []):
            tallies.setdefault(key, ObjectTally()).add(f, t)
    return {k: v.summary() for k, v in tallies.items()}


def with_min_score(labels: np.ndarray, p: np.ndarray, min_score: float) -> np.ndarray:
    from unetkit.objects.postprocess import _drop_weak_and_small

    return _drop_weak_and_small(labels, 1.0 - p[0], 0, min_score)


def _sweep_one(params: tuple) -> list[tuple]:
    probs, truth, min_size = _STATE["probs"], _STATE["truth"], _STATE["min_size"]
    base = [distance_objects(p, params, min_size) for p in probs]
    rows = []
    for ms in MIN_SCORES:
        found = [with_min_score(b, p, ms) for b, p in zip(base, probs)]
        rows.append((params, ms, tally(found, truth)["all"]))
    return rows


def truth_maps(truth: np.ndarray) -> np.ndarray:
    """A perfect distance head's maps: p(background), p(nucleus), the normalised distance."""
    from unetkit.data.targets import object_distance

    fg = (truth > 0).astype(np.float32)
    return np.stack([1 - fg, fg, object_distance(truth)])


def _perfect_one(params: tuple) -> dict:
    found = [distance_objects(p, params, 0) for p in _STATE["probs"]]
    return tally(found, _STATE["truth"])["all"]


def _no_worse(score: dict, floor: dict) -> bool:
    return score["ap_50"] >= floor["ap_50"] and score["map"] >= floor["map"]


def distance_grid() -> list[tuple]:
    grid = []
    for sigma in (0, 0.5, 1, 2, 3):
        grid += [("thr", sigma, t, m) for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8)
                 for m in (0, 5, 20)]  # fmt: skip
        grid += [("prod", sigma, t, 0) for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)]
        grid += [("hmax", sigma, h, 0) for h in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)]
        grid += [("rel", sigma, f, 0) for f in (0.5, 0.6, 0.7, 0.8, 0.9)]
        if sigma <= 2:
            grid += [("peaks", sigma, md, 0) for md in (2, 3, 4, 6, 8)]
    return grid


def fmt_row(name: str, s: dict) -> str:
    return (
        f"{name:<34}{s['ap_50']:7.3f}{s['map']:7.3f}{s['pq']:7.3f}{s['merges']:7d}"
        f"{s['splits']:7d}{s['n_pred']:7d}"
    )


HEADER = f"{'setting':<34}{'AP50':>7}{'mAP':>7}{'PQ':>7}{'merges':>7}{'splits':>7}{'n_pred':>7}"


def label_of(params: tuple, ms: float) -> str:
    family, sigma, value, seed_min = params
    return f"{family} s{sigma:g} {value:g} seedmin{seed_min} ms{ms:g}"


def best_of(rows: list[tuple]) -> tuple:
    return max(rows, key=lambda r: (round(r[2]["ap_50"], 4), r[2]["map"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("distance", type=Path, help="the distance head's best.pt")
    parser.add_argument("boundary", type=Path, help="the boundary head's best.pt")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/distpp"))
    parser.add_argument("--top", type=int, default=25, help="rows of the distance table")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--package", action="store_true",
        help="also score separate_objects with this checkout's ObjectConfig defaults",
    )  # fmt: skip
    args = parser.parse_args()
    from unetkit.checkpoint import load_checkpoint
    from unetkit.config import ObjectConfig
    from unetkit.objects.postprocess import separate_objects

    _, test, group_of = split()
    heads = {}
    for name, path in (("distance", args.distance), ("boundary", args.boundary)):
        ckpt = load_checkpoint(path)
        val = list((ckpt.train_state or {})["data"]["val"])
        objects = dict(ckpt.extra["objects"])
        heads[name] = (path, val, objects)
        print(f"{name}: {path}, {len(val)} val images {' '.join(val)}; stored {objects}")
    start = time.monotonic()
    probs = {}
    for name, (path, val, _) in heads.items():
        probs[name, "val"] = cache_probs(path, val, args.cache, f"{name}-val")
        probs[name, "test"] = cache_probs(path, test, args.cache, f"{name}-test")
    truth = {"val": truths(heads["distance"][1]), "test": truths(test)}
    truth_b = truths(heads["boundary"][1])
    print(f"probabilities ready in {time.monotonic() - start:.0f} s")

    print("\nthe predicted distance inside the true objects (val, then test)")
    for part, stems in (("val", heads["distance"][1]), ("test", test)):
        print(part)
        describe(probs["distance", part], truth[part], [group_of[s].split("_")[0] for s in stems])

    # ---- distance head sweep (val) -----------------------------------------------------------
    min_size = int(heads["distance"][2]["min_size"] or 0)
    _STATE.update(probs=probs["distance", "val"], truth=truth["val"], min_size=min_size)
    grid = distance_grid()
    start = time.monotonic()
    with Pool(args.workers) as pool:
        rows = [r for chunk in pool.map(_sweep_one, grid, chunksize=4) for r in chunk]
    print(f"\ndistance head, val: {len(rows)} settings in {time.monotonic() - start:.0f} s")
    current = next(r for r in rows if r[0] == ("thr", 0, 0.5, 0) and r[1] == 0.8)
    print(HEADER)
    print(fmt_row("before: " + label_of(*current[:2]), current[2]))
    for family in ("thr", "prod", "rel", "hmax", "peaks"):
        best = best_of([r for r in rows if r[0][0] == family])
        print(fmt_row("best " + label_of(*best[:2]), best[2]))
    ranked = sorted(rows, key=lambda r: (-round(r[2]["ap_50"], 4), -r[2]["map"]))
    # the same seedings on perfect maps of the val images (min_score is moot there: p = 1)
    perfect_maps = [truth_maps(t) for t in truth["val"]]
    candidates = list(dict.fromkeys([current[0]] + [r[0] for r in ranked[: 3 * args.top]]))
    _STATE.update(probs=perfect_maps, min_size=0)
    with Pool(args.workers) as pool:
        perfect = dict(zip(candidates, pool.map(_perfect_one, candidates)))
    floor = perfect[current[0]]
    ok = [r for r in ranked if r[0] in perfect and _no_worse(perfect[r[0]], floor)]
    chosen_d = ok[0] if ok else current
    print(f"top {args.top} by AP@0.5; perfect maps of the val images: AP50 / mAP / splits")
    for r in ranked[: args.top]:
        mark = " <- chosen" if r is chosen_d else ""
        q = perfect[r[0]]
        print(fmt_row(label_of(*r[:2]), r[2]) + f"   {q['ap_50']:.3f} {q['map']:.3f} "
              f"{q['splits']:3d}{mark}")  # fmt: skip
    q = perfect[current[0]]
    print(f"{'before, perfect maps':<76}{q['ap_50']:.3f} {q['map']:.3f} {q['splits']:3d}")
    if chosen_d not in ranked[: args.top]:
        q = perfect[chosen_d[0]]
        print(fmt_row("chosen " + label_of(*chosen_d[:2]), chosen_d[2])
              + f"   {q['ap_50']:.3f} {q['map']:.3f} {q['splits']:3d}")  # fmt: skip

    # ---- boundary head sweep (val) -----------------------------------------------------------
    b_objects = heads["boundary"][2]
    b_rows = []
    for st, ms in itertools.product((0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), MIN_SCORES):
        cfg = ObjectConfig(**{**b_objects, "seed_threshold": st, "min_score": ms})
        found = [separate_objects(p, cfg)[1] for p in probs["boundary", "val"]]
        b_rows.append(((st,), ms, tally(found, truth_b)["all"]))
    print("\nboundary head, val")
    print(HEADER)
    for r in sorted(b_rows, key=lambda r: (-round(r[2]["ap_50"], 4), -r[2]["map"]))[:10]:
        print(fmt_row(f"seed_threshold {r[0][0]:g} ms{r[1]:g}", r[2]))
    b_current = next(r for r in b_rows if r[0] == (0.5,) and r[1] == 0.8)
    print(fmt_row("stored: seed_threshold 0.5 ms0.8", b_current[2]))
    chosen_b = best_of(b_rows)

    # ---- the chosen settings, once on the test images ----------------------------------------
    groups = [group_of[s] for s in test]
    results = {}
    found = [
        with_min_score(distance_objects(p, chosen_d[0], min_size), p, chosen_d[1])
        for p in probs["distance", "test"]
    ]
    results["distance " + label_of(*chosen_d[:2])] = tally(found, truth["test"], groups)
    found = [
        with_min_score(distance_objects(p, ("thr", 0, 0.5, 0), min_size), p, 0.8)
        for p in probs["distance", "test"]
    ]
    results["distance before (thr 0.5)"] = tally(found, truth["test"], groups)
    cfg = ObjectConfig(**{**b_objects, "seed_threshold": chosen_b[0][0], "min_score": chosen_b[1]})
    found = [separate_objects(p, cfg)[1] for p in probs["boundary", "test"]]
    results[f"boundary seed_threshold {chosen_b[0][0]:g} ms{chosen_b[1]:g}"] = tally(
        found, truth["test"], groups
    )
    found = [separate_objects(p, ObjectConfig(**b_objects))[1] for p in probs["boundary", "test"]]
    results["boundary stored (0.5, 0.8)"] = tally(found, truth["test"], groups)
    if args.package:
        d_objects = {**heads["distance"][2]}
        for key in ("seed_threshold", "distance_sigma", "seed_h", "min_score"):
            d_objects.pop(key, None)  # this checkout's defaults, not the stored settings
        cfg = ObjectConfig(**d_objects)
        found = [separate_objects(p, cfg)[1] for p in probs["distance", "test"]]
        results["distance package defaults"] = tally(found, truth["test"], groups)
    print("\ntest images (19), each head's val-chosen setting and its previous / stored one")
    print(HEADER)
    for name, res in results.items():
        print(fmt_row(name[:34], res["all"]))
    print("\nper group, AP@0.5 / mean AP / splits")
    names = list(results)
    print(f"{'group':<24}" + "".join(f"{n[:22]:>24}" for n in names))
    for g in sorted(set(groups)):
        cells = "".join(
            f"{results[n][g]['ap_50']:>9.3f}{results[n][g]['map']:7.3f}{results[n][g]['splits']:>8d}"
            for n in names
        )
        print(f"{g:<24}{cells}")


if __name__ == "__main__":
    main()
