"""Mixed nuclei (DSB 2018 dev subset): unetkit's default command against simple baselines.

A fixed split stratified by imaging group (``manifest.csv``): in each group, sorted by file
name, every fifth image from the third on (at least one per group) is held out: 19 test and
70 training images. Each recipe trains on the 70 within the same wall-clock budget, predicts
the 19 whole, and is scored by foreground (nucleus) Dice, pooled over the test pixels, per
imaging group and overall:

* ``default``: ``unetkit train TRAIN -o RUN --time-budget B`` and nothing else (its own
  internal validation split of the 70), then ``best.pt`` through ``Predictor`` defaults;
* ``otsu``: per-image Otsu threshold of the grey image, inverted where it marks more than
  half of the image (no learning);
* ``milesial``: milesial/Pytorch-UNet's recipe reproduced with unetkit's parts: its full-width
  U-Net, RMSprop lr 1e-5 (momentum 0.999, weight decay 1e-8), CE + Dice, no augmentation,
  batch 1, images divided by 255, reduce-on-plateau; its ``--scale 0.5`` becomes a resize to
  256 x 256 (DSB images are 256 to 1272 px wide), fp32 on a CPU.

    python bench/dsb.py --budget 10                       # default vs Otsu
    python bench/dsb.py --budget 10 --recipes default,otsu,milesial
    python bench/dsb.py --budget 10 --where-missing        # + where the errors lie, per group

A learning curve (``--train-sizes``): the default command on nested subsets of the 70 training
images stratified by group (``curve.py``: the 8 are among the 16, ...), ``--seeds`` runs each,
the same 19 test images; pooled and per-group Dice and predicted / true foreground ratio, Otsu
beside them, and ``--plot`` draws Dice against the number of annotated images:

    python bench/dsb.py --budget 10 --train-sizes 8,16,32,70 --seeds 3 --plot curve.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018-dev"


def split() -> tuple[list[str], list[str], dict[str, str]]:
    """(train stems, test stems, stem -> group): every fifth per group, from the third on."""
    rows = list(csv.DictReader((DATA / "manifest.csv").open()))
    groups: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(Path(row["file"]).stem)
    test = []
    for stems in groups.values():
        stems.sort()
        picked = stems[2::5] or stems[len(stems) // 2 : len(stems) // 2 + 1]
        test.extend(picked)
    group_of = {Path(r["file"]).stem: r["group"] for r in rows}
    train = sorted(s for s in group_of if s not in set(test))
    return train, sorted(test), group_of


BOUNDARY_WIDTH = 1  # --boundary-width


def boundary_target(instances: np.ndarray, width: int | None = None) -> np.ndarray:
    """3 classes from instance labels: 0 background, 1 nucleus interior, 2 the nucleus pixels
    within ``width`` px (Chebyshev) of another label or the background (an inner boundary:
    1 px, the 8-neighbourhood, by default): ``unetkit.data.targets.object_edges``, which at
    2 px and more narrows the edge on objects it would leave under a quarter interior."""
    from unetkit.data.targets import object_edges

    width = BOUNDARY_WIDTH if width is None else width
    edge = object_edges(instances, width)
    return np.where(edge, 2, (instances > 0).astype(np.uint8)).astype(np.uint8)


def _link_dataset(root: Path, stems: list[str], target: str = "nuclei") -> Path:
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        os.symlink(DATA / "images" / f"{stem}.png", root / "images" / f"{stem}.png")
        if target == "boundary":
            inst = np.asarray(Image.open(DATA / "instances" / f"{stem}.png"))
            Image.fromarray(boundary_target(inst)).save(root / "masks" / f"{stem}.png")
        else:
            os.symlink(DATA / "masks" / f"{stem}.png", root / "masks" / f"{stem}.png")
    names = "background\ninterior\nboundary\n" if target == "boundary" else "background\nnucleus\n"
    (root / "classes.txt").write_text(names)
    return root


def otsu_mask(image: np.ndarray) -> np.ndarray:
    grey = image.mean(2) if image.ndim == 3 else image
    grey = cv2.normalize(grey.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, mask = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return 1 - mask if mask.mean() > 0.5 else mask


def train_default(train_dir: Path, run: Path, budget: float, extra: str = "") -> Path:
    cmd = [sys.executable, "-m", "unetkit", "train", str(train_dir), "-o", str(run),
           "--time-budget", str(budget), *extra.split()]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run / "best.pt"


def train_milesial(train_dir: Path, run: Path, budget: float, extra: str = "") -> Path:
    from unetkit import TrainConfig, fit, preset_config
    from unetkit.config import AugmentConfig, DataConfig

    cfg = TrainConfig(
        dataset=str(train_dir), run_dir=str(run), preset="milesial",
        model=preset_config("milesial"),
        data=DataConfig(resize="resize", size=(256, 256), normalize="fixed"),
        augment=AugmentConfig.none(), optimizer="rmsprop", lr=1e-5, momentum=0.999,
        weight_decay=1e-8, schedule="plateau", loss="ce+dice", batch_size=1,
        precision="fp32", time_budget=budget, clip_grad=1.0,
    )  # fmt: skip
    fit(cfg)
    return run / "best.pt"


def predictions(predict, stems: list[str]) -> dict[str, np.ndarray]:
    """Stem -> (H, W) bool foreground of ``predict(image)``."""
    from unetkit.data.imageio import read_image

    return {s: predict(read_image(DATA / "images" / f"{s}.png")) > 0 for s in stems}


def score_masks(preds: dict[str, np.ndarray], group_of: dict[str, str]) -> dict:
    """Foreground Dice pooled over the pixels of each group and ``all``, per image, and the
    predicted-to-true foreground ratio (pooled per group: > 1 predicts too much)."""
    from unetkit.data.imageio import read_mask

    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    per_image = {}
    for stem, pred in preds.items():
        gt = read_mask(DATA / "masks" / f"{stem}.png") > 0
        a, b, c = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
        per_image[stem] = 2 * a / max(1, 2 * a + b + c)
        for key in (group_of[stem], "all"):
            tp[key] += a
            fp[key] += b
            fn[key] += c
    dice = {k: 2 * tp[k] / max(1, 2 * tp[k] + fp[k] + fn[k]) for k in tp}
    ratio = {k: (tp[k] + fp[k]) / max(1, tp[k] + fn[k]) for k in tp}
    return {"dice": dice, "ratio": ratio, "per_image": per_image}


def score(predict, stems: list[str], group_of: dict[str, str]) -> dict:
    return score_masks(predictions(predict, stems), group_of)


def errors_of(preds: dict[str, np.ndarray], rim: int) -> dict[str, dict]:
    """Stem -> ``where_missing.image_errors`` of its prediction against ``instances/``."""
    from PIL import Image

    from unetkit.data.imageio import read_image
    from where_missing import image_errors

    return {
        stem: image_errors(
            pred,
            np.asarray(Image.open(DATA / "instances" / f"{stem}.png")),
            read_image(DATA / "images" / f"{stem}.png"),
            rim,
        )
        for stem, pred in preds.items()
    }


def boundary_run(
    train_dir: Path, work: Path, test: list[str], budget: float, extra: str = ""
) -> None:
    """The default command on the 3-class boundary target; per-class IoU on the test images."""
    from PIL import Image

    from unetkit import PredictConfig, Predictor
    from unetkit.data.imageio import read_image
    from unetkit.metrics import ConfusionMatrix

    start = time.monotonic()
    ckpt = train_default(train_dir, work / "default", budget, extra)
    minutes = (time.monotonic() - start) / 60
    predictor = Predictor.from_checkpoint(ckpt, PredictConfig())
    names = ["background", "interior", "boundary"]
    cm, counts = ConfusionMatrix(3), np.zeros(3)
    import torch

    for stem in test:
        gt = boundary_target(np.asarray(Image.open(DATA / "instances" / f"{stem}.png")))
        counts += np.bincount(gt.ravel(), minlength=3)
        pred = predictor.predict_mask(read_image(DATA / "images" / f"{stem}.png"))
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    m = cm.compute(names)
    print(f"\nDSB 2018 dev, 3-class target, {BOUNDARY_WIDTH} px boundary, {len(test)} test images, "
          f"{minutes:.1f} min (runs in {work})")  # fmt: skip
    print(f"{'class':<12}{'share %':>9}{'IoU':>8}{'Dice':>8}")
    for i, name in enumerate(names):
        pc = m["per_class"][name]
        print(
            f"{name:<12}{100 * counts[i] / counts.sum():>9.2f}{pc['iou']:>8.3f}{pc['dice']:>8.3f}"
        )
    print(f"mean IoU {m['mean_iou']:.3f}")


def print_errors(groups: dict, title: str, rim: int) -> None:
    from where_missing import print_table

    print_table(groups, title, rim)


def _checkpoint(run: Path) -> Path:
    return run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"


def learning_curve(args, train: list[str], test: list[str], group_of: dict[str, str],
                   work: Path) -> dict:  # fmt: skip
    """The default command on nested stratified subsets of the training split (``curve``),
    ``--seeds`` runs each, scored on the same test images; Otsu beside them."""
    import torch

    from curve import composition, nested_subsets, parse_sizes
    from unetkit import PredictConfig, Predictor
    from where_missing import by_group

    subsets = nested_subsets(train, group_of, parse_sizes(args.train_sizes))
    runs = []
    for n, stems in subsets.items():
        data = work / f"train_{n:03d}"
        if not data.exists():
            _link_dataset(data, stems)
        for seed in range(args.seeds):
            run = work / f"n{n:03d}_seed{seed}"
            if not (args.reuse and _checkpoint(run).is_file()):
                train_default(data, run, args.budget, f"{args.train_args} --seed {seed}")
            state = torch.load(run / "last.pt", weights_only=True)["train_state"]
            minutes = float(state["history"][-1]["elapsed_min"])  # as the run recorded it
            predictor = Predictor.from_checkpoint(_checkpoint(run), PredictConfig())
            preds = predictions(predictor.predict_mask, test)
            row = {"size": n, "seed": seed, "minutes": minutes, "steps": state["step"],
                   **score_masks(preds, group_of)}  # fmt: skip
            if args.where_missing:
                row["errors"] = errors_of(preds, args.rim)
            runs.append(row)
            print(f"n {n:>3} seed {seed}: Dice {row['dice']['all']:.3f}, ratio "
                  f"{row['ratio']['all']:.3f}, {state['step']} steps in {minutes:.1f} min",
                  flush=True)  # fmt: skip
    otsu_preds = predictions(otsu_mask, test)
    otsu = score_masks(otsu_preds, group_of)
    if args.where_missing:
        otsu["errors"] = errors_of(otsu_preds, args.rim)
    print(f"\nDSB 2018 dev learning curve: nested subsets of the {len(train)} training images "
          f"stratified by group, {len(test)} test images, the default command at "
          f"{args.budget:g} min, {args.seeds} seed(s) each (runs in {work})")  # fmt: skip
    for n, stems in subsets.items():
        print(f"  {n:>3}: {composition(stems, group_of)}")
    _print_curve(runs, otsu, test, group_of)
    if args.where_missing:
        for n in subsets:
            rows = [(s, e) for r in runs if r["size"] == n for s, e in r["errors"].items()]
            print_errors(by_group(rows, group_of), f"{n} images ({args.seeds} run(s))", args.rim)
        print_errors(by_group(otsu["errors"].items(), group_of), "otsu", args.rim)
    result = {"budget": args.budget, "subsets": subsets, "runs": runs, "otsu": otsu}
    if args.plot:
        _plot(args.plot, runs, otsu, test, group_of, args.budget)
    return result


def _print_curve(runs: list[dict], otsu: dict, test: list[str], group_of: dict[str, str]) -> None:
    from curve import mean, spread

    sizes = sorted({r["size"] for r in runs})
    of = {n: [r for r in runs if r["size"] == n] for n in sizes}
    print(f"\n{'images':>6}{'Dice':>8}  {'runs':<22}{'ratio':>7}  {'runs':<22}{'steps':>7}"
          f"{'min':>6}")  # fmt: skip
    for n in sizes:
        dice, ratio = [r["dice"]["all"] for r in of[n]], [r["ratio"]["all"] for r in of[n]]
        print(f"{n:>6}{mean(dice):>8.3f}  {spread(dice):<22}{mean(ratio):>7.3f}  "
              f"{spread(ratio):<22}{mean([r['steps'] for r in of[n]]):>7.0f}"
              f"{mean([r['minutes'] for r in of[n]]):>6.1f}")  # fmt: skip
    print(f"{'otsu':>6}{otsu['dice']['all']:>8.3f}  {'':<22}{otsu['ratio']['all']:>7.3f}")
    groups = sorted({group_of[s] for s in test})
    counts = {g: sum(group_of[s] == g for s in test) for g in groups}
    for key, title in (("dice", "foreground Dice"), ("ratio", "predicted / true foreground")):
        print(f"\nper group, {title} (mean over seeds)")
        print(f"{'group':<22}{'n':>3}" + "".join(f"{n:>8}" for n in sizes) + f"{'otsu':>8}")
        for g in [*groups, "all"]:
            cells = "".join(f"{mean([r[key][g] for r in of[n]]):>8.3f}" for n in sizes)
            print(f"{g:<22}{counts.get(g, len(test)):>3}{cells}{otsu[key][g]:>8.3f}")


def _plot(path: Path, runs: list[dict], otsu: dict, test: list[str], group_of: dict[str, str],
          budget: float) -> None:  # fmt: skip
    from unetkit.plots import plot_learning_curve

    sizes = sorted({r["size"] for r in runs})
    pooled = {n: [r["dice"]["all"] for r in runs if r["size"] == n] for n in sizes}
    shown = sorted(
        g for g in {group_of[s] for s in test} if sum(group_of[s] == g for s in test) > 1
    )
    groups = {g: {n: [r["dice"][g] for r in runs if r["size"] == n] for n in sizes} for g in shown}
    plot_learning_curve(
        pooled, otsu["dice"]["all"], path, groups=groups, label="all (mean over seeds)",
        title=f"DSB 2018 dev: {len(test)} test images, default command, {budget:g} min",
        ylabel="foreground Dice (pooled over test pixels)",
    )  # fmt: skip
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes")
    parser.add_argument("--recipes", default="default,otsu")
    parser.add_argument("--out", type=Path, help="keep the run folders here")
    parser.add_argument(
        "--target", choices=["nuclei", "boundary"], default="nuclei",
        help="boundary: 3 classes (background / interior / --boundary-width px boundary) from "
        "instances/, default recipe only, per-class IoU",
    )  # fmt: skip
    parser.add_argument(
        "--boundary-width", type=int, default=1, help="boundary target: its width in px (1-2)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--train-args", default="", help="extra `unetkit train` flags for the default recipe"
    )
    parser.add_argument("--reuse", action="store_true", help="score runs already in --out")
    parser.add_argument(
        "--train-sizes", help="learning curve: e.g. 8,16,32,70 training images (nested subsets "
        "of the training split, stratified by group), the default recipe and Otsu",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="learning curve: runs per size")
    parser.add_argument("--plot", type=Path, help="learning curve: Dice against images (PNG)")
    parser.add_argument(
        "--where-missing", action="store_true",
        help="split missing / extra foreground by object rims, holes, missed and spurious "
        "objects (instances/), per group",
    )  # fmt: skip
    parser.add_argument("--rim", type=int, default=2, help="--where-missing: rim width in px")
    args = parser.parse_args()
    if not (DATA / "manifest.csv").is_file():
        raise SystemExit(f"DSB data not found at {DATA}")
    from unetkit import PredictConfig, Predictor

    global BOUNDARY_WIDTH
    BOUNDARY_WIDTH = args.boundary_width
    train, test, group_of = split()
    work = args.out or Path(tempfile.mkdtemp(prefix="dsb-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.train_sizes:
        curve = learning_curve(args, train, test, group_of, work)
        if args.json:
            args.json.write_text(json.dumps(curve, indent=2))
        return None
    train_dir = work / "train"
    if not train_dir.exists():
        _link_dataset(train_dir, train, args.target)
    if args.target == "boundary":
        return boundary_run(train_dir, work, test, args.budget, args.train_args)
    results, info, errors = {}, {}, {}
    for name in args.recipes.split(","):
        start = time.monotonic()
        if name == "otsu":
            results[name] = score(otsu_mask, test, group_of)
            info[name] = {"minutes": (time.monotonic() - start) / 60}
            continue
        trainer = {"default": train_default, "milesial": train_milesial}[name]
        ckpt = work / name / "best.pt"
        if not (args.reuse and ckpt.is_file()):
            extra = args.train_args if name == "default" else ""
            ckpt = trainer(train_dir, work / name, args.budget, extra)
        minutes = (time.monotonic() - start) / 60
        predictor = Predictor.from_checkpoint(ckpt, PredictConfig())
        preds = predictions(predictor.predict_mask, test)
        results[name] = score_masks(preds, group_of)
        if args.where_missing:
            errors[name] = errors_of(preds, args.rim)
        import torch

        state = torch.load(work / name / "last.pt", weights_only=True)["train_state"]
        info[name] = {"minutes": minutes, "steps": state["step"], "epochs": state["epoch"],
                      "normalize": state["config"]["data"].get("normalize", "fixed")}  # fmt: skip
    groups = sorted({group_of[s] for s in test})
    counts = {g: sum(group_of[s] == g for s in test) for g in groups}
    print(
        f"\nDSB 2018 dev: {len(train)} train / {len(test)} test images, budget "
        f"{args.budget:g} min, foreground Dice pooled over test pixels (runs in {work})"
    )
    header = f"{'group':<22}{'n':>3}" + "".join(f"{r:>10}" for r in results)
    print(header)
    for g in [*groups, "all"]:
        n = counts.get(g, len(test))
        print(f"{g:<22}{n:>3}" + "".join(f"{results[r]['dice'][g]:>10.3f}" for r in results))
    for name, extra in info.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in extra.items()))  # fmt: skip
    if args.where_missing:
        from where_missing import by_group

        for name, per_image in errors.items():
            print_errors(by_group(per_image.items(), group_of), name, args.rim)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "info": info}, indent=2))


if __name__ == "__main__":
    main()
