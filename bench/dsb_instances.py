"""Objects in mixed nuclei (DSB 2018 dev subset): ``--task instance`` against simple baselines.

The fixed split of ``bench/dsb.py`` (stratified by imaging group: 70 train / 19 test images).
Every recipe is scored against the true instances of the 19 test images with the DSB 2018
metric (the per-image mean over IoU thresholds 0.50:0.05:0.95 of TP / (TP + FP + FN)), AP at
IoU 0.5, panoptic quality, and merges (predicted objects holding most of two or more true ones):

* ``instance``: ``unetkit train TRAIN -o RUN --task instance --time-budget B`` (the data with
  its ``instances/``), then ``best.pt`` through ``Predictor.predict_objects`` defaults;
* ``instance-distance``: the same with ``--instance-head distance`` (a normalised
  distance-to-edge channel instead of the boundary class; ``--instance-args`` apply to both);
* ``instance-rays``: the same with ``--instance-head rays`` (that channel as the object
  probability plus 32 ray lengths: StarDist's star-convex polygons in unetkit's U-Net);
* ``semantic``: the default semantic command ``unetkit train TRAIN -o RUN --time-budget B``,
  objects = connected components of its mask (what a semantic U-Net gives);
* ``otsu-ws``: no learning: per-image Otsu mask, split by a watershed on its distance transform
  from local maxima at least 4 px apart (the classic nuclei recipe);
* ``truth-cc``: connected components of the TRUE semantic masks: what a perfect pixel
  classifier gives without separation (a reference, not a recipe);
* ``truth-boundary`` / ``truth-distance`` / ``truth-rays``: the TRUE maps of each instance
  head (one-hot background / nucleus / 2 px boundary; background / nucleus probabilities and
  the normalised distance; those and the 32 true ray lengths) through the post-processing's
  defaults (``min_size`` 0): the ceiling of each head's representation and post-processing,
  no training.

    python bench/dsb_instances.py --budget 15
    python bench/dsb_instances.py --budget 15 --recipes instance,otsu-ws --out /tmp/dsbi
    python bench/dsb_instances.py --recipes instance --instance-args "--boundary-width 2"
    python bench/dsb_instances.py --budget 15 --recipes instance,instance-distance,otsu-ws
    python bench/dsb_instances.py --recipes truth-boundary,truth-distance,truth-rays
    python bench/dsb_instances.py --budget 15 --recipes instance,instance-rays
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsb import DATA, otsu_mask, split

KEYS = ("map", "ap_50", "pq", "merges")


def link_dataset(root: Path, stems: list[str]) -> Path:
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            os.symlink(DATA / sub / f"{stem}.png", root / sub / f"{stem}.png")
    (root / "classes.txt").write_text("background\nnucleus\n")
    return root


def train(train_dir: Path, run: Path, budget: float, task: str | None, extra: str = "") -> Path:
    cmd = [sys.executable, "-m", "unetkit", "train", str(train_dir), "-o", str(run),
           "--time-budget", str(budget)] + (["--task", task] if task else [])  # fmt: skip
    cmd += extra.split()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run / "best.pt"


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = otsu_mask(image) > 0
    dist = ndimage.distance_transform_edt(mask)
    regions, _ = ndimage.label(mask)
    peaks = peak_local_max(dist, min_distance=4, labels=regions, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def truth_maps(truth: np.ndarray, head: str) -> np.ndarray:
    """The maps a perfect instance model of ``head`` would predict for the true objects."""
    from unetkit.config import ObjectConfig
    from unetkit.data.targets import boundary_target, object_distance

    mask = (truth > 0).astype(np.int64)
    if head == "boundary":
        width = ObjectConfig().boundary_width
        target = boundary_target(mask, truth, 2, width)
        return np.stack([(target == c).astype(np.float32) for c in range(3)])
    fg = mask.astype(np.float32)
    maps = np.stack([1 - fg, fg, object_distance(truth)])
    if head == "rays":
        from unetkit.data.rays import object_rays

        maps = np.concatenate([maps, object_rays(truth, ObjectConfig().n_rays)])
    return maps


def score(objects_of, stems: list[str], group_of: dict[str, str]) -> dict:
    """Per group and overall: the ObjectTally summary of each recipe's objects."""
    from unetkit.data.imageio import read_image
    from unetkit.data.instances import read_instances
    from unetkit.objects.metrics import ObjectTally

    tallies: dict[str, ObjectTally] = {}
    seconds = 0.0
    for stem in stems:
        image = read_image(DATA / "images" / f"{stem}.png")
        truth = read_instances(DATA / "instances" / f"{stem}.png")
        start = time.perf_counter()
        found = objects_of(image, stem)
        seconds += time.perf_counter() - start
        for key in (group_of[stem], "all"):
            tallies.setdefault(key, ObjectTally()).add(found, truth)
    return {"groups": {k: t.summary() for k, t in tallies.items()}, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=15.0, help="training minutes")
    parser.add_argument("--recipes", default="instance,semantic,otsu-ws,truth-cc")
    parser.add_argument("--out", type=Path, help="keep the run folders here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--reuse", action="store_true", help="score runs already in --out")
    parser.add_argument(
        "--instance-args", default="", help="extra train flags for the instance recipe"
    )
    args = parser.parse_args()
    if not (DATA / "manifest.csv").is_file():
        raise SystemExit(f"DSB data not found at {DATA}")
    from unetkit import PredictConfig, Predictor
    from unetkit.data.imageio import read_mask
    from unetkit.objects.labels import connected_objects

    train_stems, test, group_of = split()
    work = args.out or Path(tempfile.mkdtemp(prefix="dsbi-"))
    work.mkdir(parents=True, exist_ok=True)
    train_dir = work / "train"
    if not train_dir.exists():
        link_dataset(train_dir, train_stems)
    results, minutes = {}, {}
    for name in args.recipes.split(","):
        start = time.monotonic()
        if name == "otsu-ws":
            results[name] = score(lambda img, s: otsu_watershed(img), test, group_of)
        elif name in ("truth-boundary", "truth-distance", "truth-rays"):
            from unetkit.config import ObjectConfig
            from unetkit.data.instances import read_instances
            from unetkit.objects.postprocess import separate_objects

            head = name.split("-")[1]
            cfg = ObjectConfig(head=head, min_size=0)

            def perfect(img, s, head=head, cfg=cfg):
                truth = read_instances(DATA / "instances" / f"{s}.png")
                return separate_objects(truth_maps(truth, head), cfg)[1]

            results[name] = score(perfect, test, group_of)
        elif name == "truth-cc":
            results[name] = score(
                lambda img, s: connected_objects(read_mask(DATA / "masks" / f"{s}.png")),
                test,
                group_of,
            )
        else:
            task = {"instance": "instance", "instance-distance": "instance",
                    "instance-rays": "instance", "semantic": None}[name]  # fmt: skip
            ckpt = work / name / "best.pt"
            if not (args.reuse and ckpt.is_file()):
                extra = args.instance_args if task == "instance" else ""
                if name in ("instance-distance", "instance-rays"):
                    extra += f" --instance-head {name.split('-')[1]}"
                ckpt = train(train_dir, work / name, args.budget, task, extra)
            predictor = Predictor.from_checkpoint(ckpt, PredictConfig())
            results[name] = score(
                lambda img, s, p=predictor: p.predict_objects(img)[1], test, group_of
            )
        minutes[name] = (time.monotonic() - start) / 60
    groups = sorted({group_of[s] for s in test})
    counts = {g: sum(group_of[s] == g for s in test) for g in groups}
    print(
        f"\nDSB 2018 dev objects: {len(train_stems)} train / {len(test)} test images, budget "
        f"{args.budget:g} min (runs in {work})"
    )
    for key in KEYS:
        print(f"\n{key} (" + {"map": "DSB mean AP over IoU 0.5:0.95, per-image mean",
                              "ap_50": "AP at IoU 0.5, per-image mean",
                              "pq": "panoptic quality, pooled",
                              "merges": "merged predictions, total"}[key] + ")")  # fmt: skip
        width = {r: max(10, len(r) + 2) for r in results}
        print(f"{'group':<22}{'n':>3}" + "".join(f"{r:>{width[r]}}" for r in results))
        for g in [*groups, "all"]:
            n = counts.get(g, len(test))
            cells = []
            for r in results:
                value = results[r]["groups"][g].get(key)
                cells.append(f"{'-' if value is None else format(value, '.3f'):>{width[r]}}"
                             if key != "merges" else f"{value:>{width[r]}d}")  # fmt: skip
            print(f"{g:<22}{n:>3}" + "".join(cells))
    print("minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    print("splits: " + ", ".join(f"{k} {v['groups']['all']['splits']}" for k, v in results.items()))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
