"""Train on ISBI 2012 (the U-Net paper's EM membranes) within a wall-clock budget and score it.

Train on slices 00-23, validate on 24-29 (membrane = class 1), then print a table with the
paper's ISBI 2012 metrics: membrane Dice and IoU, pixel error and adapted Rand error (of the
4-connected cells of the membrane mask), and the adapted Rand error of the cells as objects
(``predict --objects-between membrane``: a seeded watershed on the membrane probability).

    python bench/isbi.py --budget 10                     # the default recipe, 10 minutes
    python bench/isbi.py --budget 10 --recipe milesial   # milesial/Pytorch-UNet's recipe
    python bench/isbi.py --budget 10 --precision fp32    # the default recipe in fp32
    python bench/isbi.py --budget 10 --train-sizes 4,8,16,24 --seeds 3 --plot curve.png

The paper reports an adapted Rand error of 0.0382 on the (unreleased) challenge test set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unetkit import PredictConfig, Predictor, TrainConfig, fit, load_checkpoint, preset_config
from unetkit.config import AugmentConfig, DataConfig
from unetkit.data.imageio import read_image, read_mask
from unetkit.metrics import ConfusionMatrix, adapted_rand_error, membrane_rand_error, pixel_error
from unetkit.objects.labels import regions_of
from unetkit.objects.postprocess import regions_between

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"
VAL = tuple(f"{i:02d}" for i in range(24, 30))
# the defaults without the photometric changes: flips, rotations, affine, elastic
GEOMETRIC = AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0, noise=0.0, blur=0.0)
NO_AUG = AugmentConfig.none()


FLIPS = GEOMETRIC.replace(affine=0.0, elastic=0.0)  # flips and 90-degree rotations only
AUGMENTS = {"default": AugmentConfig(), "geometric": GEOMETRIC, "flips": FLIPS, "none": NO_AUG}


def recipe(name: str, args) -> TrainConfig:
    """The training configuration of a named recipe (budget and run folder filled in later)."""
    if name == "milesial":  # milesial/Pytorch-UNet: RMSprop 1e-5, CE + Dice, scale 0.5, no aug
        return TrainConfig(
            preset="milesial",
            model=preset_config("milesial"),
            data=DataConfig(channels=1, resize="resize", size=(256, 256), normalize="fixed"),
            augment=NO_AUG,
            optimizer="rmsprop",
            lr=1e-5,
            momentum=0.999,
            weight_decay=1e-8,
            schedule="plateau",
            loss="ce+dice",
            batch_size=1,
            precision="fp32",
            epochs=10_000,
            val_every=10_000,
        )
    # the library's defaults (TrainConfig()), with only what the command line changes
    cfg = TrainConfig(
        data=DataConfig(channels=1, size=(args.patch, args.patch)),
        augment=AUGMENTS[args.aug],
        steps_per_epoch=args.steps,
        precision=args.precision,
    )
    changes = {
        k: v
        for k, v in (
            ("preset", args.preset),
            ("lr", args.lr),
            ("loss", args.loss),
            ("batch_size", args.batch),
        )
        if v is not None
    }
    if args.base_width:
        changes["model"] = preset_config(args.preset or cfg.preset, base_width=args.base_width)
    if args.weight_map:
        changes.update(weight_map=True, weight_map_objects="0")  # objects: the cells (class 0)
    return cfg.replace(**changes)


def otsu_predict(image: np.ndarray) -> np.ndarray:
    """The no-learning baseline: a per-image Otsu threshold, membrane = the darker side."""
    import cv2

    grey = image[..., 0] if image.ndim == 3 else image
    grey = cv2.normalize(grey.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return (1 - bright).astype(np.int64)


def score_masks(predict) -> dict:
    """Membrane metrics of ``predict(image) -> (H, W) class map`` (or ``(class map, cells)``
    with cells the regions between the predicted membranes) on the validation slices."""
    cm = ConfusionMatrix(2)
    rand, perr, cells = [], [], []
    for stem in VAL:
        gt = read_mask(DATA / "masks" / f"{stem}.png")
        pred = predict(read_image(DATA / "images" / f"{stem}.png", channels=1))
        pred, regions = pred if isinstance(pred, tuple) else (pred, None)
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        rand.append(membrane_rand_error(pred, gt, membrane=1))
        perr.append(pixel_error(pred, gt))
        if regions is not None:
            cells.append(adapted_rand_error(regions, regions_of(gt, 1)))
    m = cm.compute(["background", "membrane"])
    counts = cm.matrix.sum(0), cm.matrix.sum(1)  # (predicted, true) pixels per class
    return {
        "dice": m["per_class"]["membrane"]["dice"],
        "fg_ratio": float(counts[0][1]) / max(float(counts[1][1]), 1.0),
        "iou": m["per_class"]["membrane"]["iou"],
        "pixel_error": float(np.mean(perr)),
        "rand_error": float(np.mean(rand)),
        "cells_rand_error": float(np.mean(cells)) if cells else None,
    }


def score(checkpoint: Path, device: str, tta: bool = False) -> dict:
    """Membrane metrics of a checkpoint on the validation slices, each predicted whole.

    Uses unetkit's own ``Predictor`` in fp32: the ``full`` strategy (no tiling), or the
    model's own resizing for a model trained on resized images (milesial's recipe).
    """
    pre = load_checkpoint(checkpoint).preprocessing
    strategy = pre.resize if pre.resize in ("resize", "letterbox") else "full"
    config = PredictConfig(strategy=strategy, tta=tta, precision="fp32")
    predictor = Predictor.from_checkpoint(checkpoint, config, device)

    def predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = predictor.predict_proba(image)  # (2, H, W)
        return probs.argmax(0), regions_between(probs[1])  # cells: --objects-between defaults

    return score_masks(predict)


TRAIN = tuple(f"{i:02d}" for i in range(24))


def _link_slices(root: Path, stems: list[str]) -> Path:
    """A dataset folder of symlinks: the training subset and the validation slices."""
    import os

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stem in [*stems, *VAL]:
            os.symlink(DATA / sub / f"{stem}.png", root / sub / f"{stem}.png")
    return root


def learning_curve(args, work: Path) -> list[dict]:
    """The recipe on nested subsets of slices 00-23 (spread over the stack: ``curve``),
    ``--seeds`` runs each, validated and scored on 24-29 as the single run is; Otsu beside."""
    from curve import mean, nested_subsets, parse_sizes, spread
    from unetkit.plots import plot_learning_curve

    subsets = nested_subsets(TRAIN, dict.fromkeys(TRAIN, "isbi"), parse_sizes(args.train_sizes))
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    device = device if args.device == "auto" else args.device
    rows = []
    for n, stems in subsets.items():
        data = work / f"train_{n:02d}"
        if not data.exists():
            _link_slices(data, stems)
        for seed in range(args.seeds):
            run = work / f"n{n:02d}_seed{seed}"
            cfg = recipe(args.recipe, args).replace(dataset=str(data), run_dir=str(run),
                val_stems=VAL, time_budget=args.budget, device=args.device, seed=seed)  # fmt: skip
            if not (args.reuse and (run / "last.pt").is_file()):
                fit(cfg, overwrite=True)
            state = torch.load(run / "last.pt", weights_only=True)["train_state"]
            row = {"size": n, "seed": seed, "slices": stems, "steps": state["step"],
                   "minutes": float(state["history"][-1]["elapsed_min"]),
                   **score(run / args.checkpoint, device)}  # fmt: skip
            rows.append(row)
            print(f"n {n:>2} seed {seed}: Dice {row['dice']:.3f}, ratio {row['fg_ratio']:.3f}, "
                  f"{row['minutes']:.1f} min", flush=True)  # fmt: skip
    otsu = score_masks(otsu_predict)
    print(f"\nISBI 2012 learning curve: nested subsets of slices 00-23, validate and score on "
          f"24-29, {args.recipe} recipe at {args.budget:g} min, {args.seeds} seed(s) each "
          f"(runs in {work})")  # fmt: skip
    for n, stems in subsets.items():
        print(f"  {n:>2}: {' '.join(stems)}")
    keys = ("dice", "iou", "pixel_error", "rand_error", "cells_rand_error", "fg_ratio")
    print(f"\n{'slices':>6}{'Dice':>8}  {'runs':<22}{'IoU':>7}{'pix err':>9}{'Rand err':>10}"
          f"{'cells Rand':>12}{'ratio':>7}{'steps':>7}{'min':>6}")  # fmt: skip
    for n in subsets:
        of = [r for r in rows if r["size"] == n]
        m = {k: mean([r[k] for r in of if r[k] is not None]) for k in keys}
        print(f"{n:>6}{m['dice']:>8.3f}  {spread([r['dice'] for r in of]):<22}{m['iou']:>7.3f}"
              f"{m['pixel_error']:>9.4f}{m['rand_error']:>10.4f}{m['cells_rand_error']:>12.4f}"
              f"{m['fg_ratio']:>7.3f}{mean([r['steps'] for r in of]):>7.0f}"
              f"{mean([r['minutes'] for r in of]):>6.1f}")  # fmt: skip
    print(f"{'otsu':>6}{otsu['dice']:>8.3f}  {'':<22}{otsu['iou']:>7.3f}{otsu['pixel_error']:>9.4f}"
          f"{otsu['rand_error']:>10.4f}{'':>12}{otsu['fg_ratio']:>7.3f}")  # fmt: skip
    if args.plot:
        runs = {n: [r["dice"] for r in rows if r["size"] == n] for n in subsets}
        plot_learning_curve(runs, otsu["dice"], args.plot, ylabel="membrane Dice (slices 24-29)",
                   title=f"ISBI 2012: {args.recipe} recipe, {args.budget:g} min a run")  # fmt: skip
        print(f"plot: {args.plot}")
    return [*rows, {"size": 0, "recipe": "otsu (no learning)", **otsu}]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes")
    parser.add_argument("--recipe", choices=["default", "milesial"], default="default")
    parser.add_argument("--preset", help="default: TrainConfig's (small)")
    parser.add_argument("--base-width", type=int)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (0: the data's)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--loss")
    parser.add_argument("--aug", choices=list(AUGMENTS), default="default")
    parser.add_argument("--weight-map", action="store_true")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tta", action="store_true", help="score with flip TTA as well")
    parser.add_argument("--checkpoint", default="best.pt", help="best.pt or last.pt")
    parser.add_argument("--out", type=Path, help="keep the run folder here")
    parser.add_argument("--reuse", action="store_true", help="score the run already in --out")
    parser.add_argument("--json", type=Path, help="also write the result row as JSON")
    parser.add_argument(
        "--train-sizes", help="learning curve: e.g. 4,8,16,24 training slices (nested, spread "
        "over 00-23); --out holds one run folder per size and seed",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="learning curve: runs per size")
    parser.add_argument("--plot", type=Path, help="learning curve: Dice against slices (PNG)")
    args = parser.parse_args()
    if not (DATA / "images").is_dir():
        raise SystemExit(f"ISBI data not found at {DATA}")
    if args.train_sizes:
        work = args.out or Path(tempfile.mkdtemp(prefix="isbi-curve-"))
        rows = learning_curve(args, work)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
    run = args.out or Path(tempfile.mkdtemp(prefix="isbi-"))
    cfg = recipe(args.recipe, args).replace(
        dataset=str(DATA),
        run_dir=str(run),
        val_stems=VAL,
        time_budget=args.budget,
        device=args.device,
    )
    start = time.monotonic()
    if not (args.reuse and (run / "last.pt").is_file()):
        fit(cfg, overwrite=True)
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    minutes = (time.monotonic() - start) / 60
    if args.reuse:  # the training time the run recorded
        minutes = float(state["history"][-1]["elapsed_min"])
    images = state["step"] * state["config"]["batch_size"]  # as the auto recipe chose it
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    device = device if args.device == "auto" else args.device
    rows = []
    for tta in (False, True) if args.tta else (False,):
        rows.append(
            {
                "recipe": args.recipe + (" +TTA" if tta else ""),
                "precision": state["config"]["precision"],
                "budget_min": args.budget,
                "used_min": minutes,
                "steps": state["step"],
                "images_per_s": images / (minutes * 60),
                **score(run / args.checkpoint, device, tta),
            }
        )
    otsu = score_masks(otsu_predict)
    rows.append({"recipe": "otsu (no learning)", "precision": "-", "used_min": 0.0, "steps": 0,
                 "images_per_s": 0.0, **otsu})  # fmt: skip
    print(f"\nISBI 2012, train 00-23, validate 24-29, {args.recipe} recipe, run {run}")
    print(
        f"{'recipe':<16}{'prec':>6}{'budget':>8}{'used':>7}{'steps':>7}{'img/s':>7}{'Dice':>7}"
        f"{'IoU':>7}{'pix err':>9}{'Rand err':>10}{'cells Rand':>12}"
    )
    for row in rows:
        print(
            f"{row['recipe']:<16}{row['precision']:>6}{args.budget:>7.0f}m{row['used_min']:>6.1f}m"
            f"{row['steps']:>7}{row['images_per_s']:>7.1f}{row['dice']:>7.3f}{row['iou']:>7.3f}"
            f"{row['pixel_error']:>9.4f}{row['rand_error']:>10.4f}"
            + (f"{row['cells_rand_error']:>12.4f}" if row["cells_rand_error"] is not None else "")
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
