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
* ``instance-offsets``: the same with ``--instance-head offsets`` (the boundary class plus
  each object pixel's offset from its object's centre: HoVer-Net's maps);
* ``instance-cp``: ``instance`` trained on the 70 images plus a copy-paste composite of each
  (``bench/copy_paste.py``: nuclei of an image pasted again touching other nuclei of it);
* ``semantic``: the default semantic command ``unetkit train TRAIN -o RUN --time-budget B``,
  objects = connected components of its mask (what a semantic U-Net gives);
* ``otsu-ws``: no learning: per-image Otsu mask, split by a watershed on its distance transform
  from local maxima at least 4 px apart (the classic nuclei recipe);
* ``truth-cc``: connected components of the TRUE semantic masks: what a perfect pixel
  classifier gives without separation (a reference, not a recipe);
* ``truth-boundary`` / ``truth-distance`` / ``truth-rays`` / ``truth-offsets``: the TRUE maps
  of each instance head (one-hot background / nucleus / 2 px boundary; background / nucleus
  probabilities and the normalised distance; those and the 32 true ray lengths; the boundary
  head's and the offsets) through the post-processing's defaults (``min_size`` 0): the
  ceiling of each head's representation and post-processing, no training;
* ``stardist`` / ``cellpose``: the peers trained on the same 70 images for the same budget by
  their own recipes (``bench/peer_stardist.py``, ``bench/peer_cellpose.py`` say how), each in
  its own interpreter with its peer folder on the path; ``stardist-4x`` / ``cellpose-4x``: the
  same for 4x the budget. The runner predicts the 19 and writes labels that are scored here; a
  peer that cannot be imported is skipped with a note.

Every row reports prediction seconds per megapixel of the 19 images (the image in memory to
objects; the peers time the same inside their runner, each after one untimed warm-up image).
The peers are never unetkit's dependencies: install each into a folder of its own, used only
here (``--peer-path NAME=DIR``, default ``/tmp/peers/NAME``); Cellpose runs on this
interpreter's torch, so it is installed without dependencies, then its other requirements::

    pip install --target /tmp/peers/stardist "stardist>=0.9,<0.10" csbdeep tensorflow-cpu
    pip install --target /tmp/peers/cellpose --no-deps cellpose==3.1.1.3
    pip install --target /tmp/peers/cellpose "numpy>=1.20,<2.1" scipy natsort tifffile tqdm \
        "numba>=0.53" llvmlite opencv-python-headless fastremap imagecodecs roifile fill-voids

    python bench/dsb_instances.py --budget 15
    python bench/dsb_instances.py --budget 15 --recipes instance,otsu-ws --out /tmp/dsbi
    python bench/dsb_instances.py --recipes instance --instance-args "--boundary-width 2"
    python bench/dsb_instances.py --budget 15 --recipes instance,instance-distance,otsu-ws
    python bench/dsb_instances.py --recipes truth-boundary,truth-distance,truth-rays
    python bench/dsb_instances.py --budget 15 --recipes instance,instance-rays
    python bench/dsb_instances.py --budget 15 --recipes instance,stardist,cellpose,otsu-ws
    python bench/dsb_instances.py --budget 15 --recipes stardist-4x,cellpose-4x --out /tmp/dsbi
    python bench/dsb_instances.py --recipes stardist --peer-path stardist=/opt/stardist
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
from peer_args import NOT_IMPORTABLE

KEYS = ("map", "ap_50", "pq", "merges")
PEERS = ("stardist", "cellpose")


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


def run_peer(
    peer: str, folder: Path, train_dir: Path, test_dir: Path, out: Path, minutes: float
) -> str | None:
    """Train and predict with ``bench/peer_PEER.py`` in its own interpreter; a note if skipped.

    Only ``folder`` is on its path (no unetkit, and TensorFlow never in this process); the
    runner writes ``out/labels/STEM.tif`` and ``out/run.json``, its output goes to ``out/log.txt``.
    """
    if not folder.is_dir():
        return f"skipped: no peer folder {folder} (pip commands: bench/dsb_instances.py)"
    out.mkdir(parents=True, exist_ok=True)
    runner = Path(__file__).with_name(f"peer_{peer}.py")
    cmd = [sys.executable, str(runner), str(train_dir), str(test_dir), str(out),
           "--budget", str(minutes)]  # fmt: skip
    with (out / "log.txt").open("w") as log:
        env = {**os.environ, "PYTHONPATH": str(folder)}
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc == 0:
        return None
    last = ((out / "log.txt").read_text().strip().splitlines() or [""])[-1]
    if rc == NOT_IMPORTABLE:
        return f"skipped ({folder}): {last}"
    return f"failed (exit {rc}; {out / 'log.txt'}): {last}"


def peer_note(run: dict) -> str:
    """One line on what a peer's runner did: steps or epochs, seconds, chosen settings."""
    done = (f"{run['steps']} steps ({run['epochs']} epochs)" if "steps" in run
            else f"{run['epochs']} epochs")  # fmt: skip
    chosen = (f"thresholds prob {run['thresholds']['prob']:.3f} nms {run['thresholds']['nms']}"
              if "thresholds" in run else f"mean diameter {run['diameter']:.1f} px")  # fmt: skip
    return f"{run['peer']}: {done} in {run['train_s']:.0f} s, {chosen}"


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
    if head in ("boundary", "offsets"):
        width = ObjectConfig().boundary_width
        target = boundary_target(mask, truth, 2, width)
        maps = np.stack([(target == c).astype(np.float32) for c in range(3)])
        if head == "offsets":
            from unetkit.data.offsets import object_offsets

            maps = np.concatenate([maps, object_offsets(truth)])
        return maps
    fg = mask.astype(np.float32)
    maps = np.stack([1 - fg, fg, object_distance(truth)])
    if head == "rays":
        from unetkit.data.rays import object_rays

        maps = np.concatenate([maps, object_rays(truth, ObjectConfig().n_rays)])
    return maps


def score(objects_of, stems: list[str], group_of: dict[str, str]) -> dict:
    """Per group and overall: the ObjectTally summary of each recipe's objects. ``objects_of``
    returns the object ids, or a model's (class mask, ids) as ``Predictor.predict_objects``
    gives them, the class mask then scored too:
    its foreground (every class but background) against the true nuclei, Dice pooled over the
    images' pixels, as ``bench/dsb.py`` scores the semantic models."""
    from unetkit.data.imageio import read_image, read_mask
    from unetkit.data.instances import read_instances
    from unetkit.objects.metrics import ObjectTally

    tallies: dict[str, ObjectTally] = {}
    seconds, pixels = 0.0, 0
    overlap, predicted, true = 0, 0, 0
    for stem in stems:
        image = read_image(DATA / "images" / f"{stem}.png")
        pixels += image.shape[0] * image.shape[1]
        truth = read_instances(DATA / "instances" / f"{stem}.png")
        start = time.perf_counter()
        found = objects_of(image, stem)
        seconds += time.perf_counter() - start
        if isinstance(found, tuple):
            mask, found = found
            fg, nuclei = mask > 0, read_mask(DATA / "masks" / f"{stem}.png") == 1
            overlap += int((fg & nuclei).sum())
            predicted, true = predicted + int(fg.sum()), true + int(nuclei.sum())
        for key in (group_of[stem], "all"):
            tallies.setdefault(key, ObjectTally()).add(found, truth)
    groups = {k: t.summary() for k, t in tallies.items()}
    out = {"groups": groups, "seconds": seconds, "megapixels": pixels / 1e6}
    if true:
        out["foreground_dice"] = 2 * overlap / (predicted + true)
    return out


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
    parser.add_argument(
        "--peer-path", action="append", default=[], metavar="NAME=DIR",
        help="a peer's install folder (default /tmp/peers/NAME)",
    )  # fmt: skip
    args = parser.parse_args()
    peer_dirs = {p: Path("/tmp/peers") / p for p in PEERS}
    for item in args.peer_path:
        name, _, folder = item.partition("=")
        if name not in PEERS or not folder:
            raise SystemExit(f"--peer-path wants NAME=DIR with NAME in {PEERS}, got {item!r}")
        peer_dirs[name] = Path(folder).resolve()
    if not (DATA / "manifest.csv").is_file():
        raise SystemExit(f"DSB data not found at {DATA}")
    from unetkit import PredictConfig, Predictor
    from unetkit.data.imageio import read_image, read_mask
    from unetkit.data.instances import read_instances
    from unetkit.objects.labels import connected_objects

    train_stems, test, group_of = split()
    work = args.out or Path(tempfile.mkdtemp(prefix="dsbi-"))
    work.mkdir(parents=True, exist_ok=True)
    train_dir = work / "train"
    if not train_dir.exists():
        link_dataset(train_dir, train_stems)
    test_dir = work / "test"
    if not test_dir.exists():
        (test_dir / "images").mkdir(parents=True)
        for stem in test:
            os.symlink(DATA / "images" / f"{stem}.png", test_dir / "images" / f"{stem}.png")
    results, minutes, notes = {}, {}, {}
    for name in args.recipes.split(","):
        start = time.monotonic()
        if name.removesuffix("-4x") in PEERS:
            peer, out = name.removesuffix("-4x"), work / name
            if not (args.reuse and (out / "run.json").is_file()):
                budget = args.budget * (4 if name.endswith("-4x") else 1)
                note = run_peer(peer, peer_dirs[peer], train_dir, test_dir, out, budget)
                if note:
                    notes[name] = note
                    print(f"{name}: {note}", flush=True)
                    continue
            run = json.loads((out / "run.json").read_text())
            results[name] = score(
                lambda img, s, d=out / "labels": read_instances(d / f"{s}.tif"), test, group_of
            )
            results[name]["seconds"] = sum(run["predict_s"][s] for s in test)
            results[name]["peer"] = run
            notes[name] = peer_note(run)
        elif name == "otsu-ws":
            results[name] = score(lambda img, s: otsu_watershed(img), test, group_of)
        elif name in ("truth-boundary", "truth-distance", "truth-rays", "truth-offsets"):
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
            task = {"instance": "instance", "instance-cp": "instance",
                    "instance-distance": "instance",
                    "instance-rays": "instance", "instance-offsets": "instance",
                    "semantic": None}[name]  # fmt: skip
            ckpt = work / name / "best.pt"
            if not (args.reuse and ckpt.is_file()):
                extra = args.instance_args if task == "instance" else ""
                if name in ("instance-distance", "instance-rays", "instance-offsets"):
                    extra += f" --instance-head {name.split('-')[1]}"
                data = train_dir
                if name == "instance-cp":  # the training images plus copy-paste composites
                    from copy_paste import build

                    data = work / "train-cp"
                    if not data.exists():
                        build(data, train_stems, variants=1)
                ckpt = train(data, work / name, args.budget, task, extra)
            predictor = Predictor.from_checkpoint(ckpt, PredictConfig())
            predictor.predict_objects(read_image(DATA / "images" / f"{train_stems[0]}.png"))
            results[name] = score(
                lambda img, s, p=predictor: p.predict_objects(img), test, group_of
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
    scored = {k: v["foreground_dice"] for k, v in results.items() if "foreground_dice" in v}
    if scored:  # the trained models' class masks as semantic masks
        print("foreground Dice of the class mask, pooled: " + ", ".join(
            f"{k} {v:.3f}" for k, v in scored.items()))  # fmt: skip
    print("prediction s/MP: " + ", ".join(
        f"{k} {v['seconds'] / v['megapixels']:.2f}" for k, v in results.items()))  # fmt: skip
    for name, note in notes.items():
        print(f"{name}: {note}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
