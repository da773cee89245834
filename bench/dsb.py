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


def score(predict, stems: list[str], group_of: dict[str, str]) -> dict:
    from unetkit.data.imageio import read_image, read_mask

    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    per_image = {}
    for stem in stems:
        gt = read_mask(DATA / "masks" / f"{stem}.png") > 0
        pred = predict(read_image(DATA / "images" / f"{stem}.png")) > 0
        a, b, c = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
        per_image[stem] = 2 * a / max(1, 2 * a + b + c)
        for key in (group_of[stem], "all"):
            tp[key] += a
            fp[key] += b
            fn[key] += c
    dice = {k: 2 * tp[k] / max(1, 2 * tp[k] + fp[k] + fn[k]) for k in tp}
    return {"dice": dice, "per_image": per_image}


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
    args = parser.parse_args()
    if not (DATA / "manifest.csv").is_file():
        raise SystemExit(f"DSB data not found at {DATA}")
    from unetkit import PredictConfig, Predictor

    global BOUNDARY_WIDTH
    BOUNDARY_WIDTH = args.boundary_width
    train, test, group_of = split()
    work = args.out or Path(tempfile.mkdtemp(prefix="dsb-"))
    work.mkdir(parents=True, exist_ok=True)
    train_dir = work / "train"
    if not train_dir.exists():
        _link_dataset(train_dir, train, args.target)
    if args.target == "boundary":
        return boundary_run(train_dir, work, test, args.budget, args.train_args)
    results, info = {}, {}
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
        results[name] = score(predictor.predict_mask, test, group_of)
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
    if args.json:
        args.json.write_text(json.dumps({"results": results, "info": info}, indent=2))


if __name__ == "__main__":
    main()
