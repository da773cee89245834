"""Train on ISBI 2012 (the U-Net paper's EM membranes) within a wall-clock budget and score it.

Train on slices 00-23, validate on 24-29 (membrane = class 1), then print a table with the
paper's ISBI 2012 metrics: membrane Dice and IoU, pixel error and adapted Rand error.

    python bench/isbi.py --budget 10                     # the default recipe, 10 minutes
    python bench/isbi.py --budget 10 --recipe milesial   # milesial/Pytorch-UNet's recipe
    python bench/isbi.py --budget 10 --precision fp32    # the default recipe in fp32

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

from unetkit import TrainConfig, fit, load_model, preset_config
from unetkit.config import AugmentConfig, DataConfig
from unetkit.data.imageio import image_to_tensor, read_image, read_mask
from unetkit.metrics import ConfusionMatrix, membrane_rand_error, pixel_error

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"
VAL = tuple(f"{i:02d}" for i in range(24, 30))
NO_AUG = AugmentConfig(
    flip=False,
    rot90=False,
    affine=0.0,
    elastic=0.0,
    brightness=0.0,
    contrast=0.0,
    gamma=0.0,
    noise=0.0,
    blur=0.0,
)


def recipe(name: str, args) -> TrainConfig:
    """The training configuration of a named recipe (budget and run folder filled in later)."""
    if name == "milesial":  # milesial/Pytorch-UNet: RMSprop 1e-5, CE + Dice, scale 0.5, no aug
        return TrainConfig(
            preset="milesial",
            model=preset_config("milesial"),
            data=DataConfig(channels=1, resize="resize", size=(256, 256)),
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
    return TrainConfig(
        preset=args.preset,
        model=preset_config(args.preset, base_width=args.base_width),
        data=DataConfig(channels=1, resize="random-crop", size=(args.patch, args.patch)),
        augment=AugmentConfig(),
        loss=args.loss,
        optimizer="adamw",
        lr=args.lr,
        schedule="cosine",
        warmup_epochs=1,
        batch_size=args.batch,
        steps_per_epoch=args.steps,
        precision=args.precision,
        epochs=10_000,
        val_every=10_000,
        weight_map=args.weight_map,
        weight_map_objects="0",
        class_weights=None,
    )


@torch.inference_mode()
def score(checkpoint: Path, device: str) -> dict:
    """Membrane metrics of a checkpoint on the validation slices, predicted whole."""
    model, ckpt = load_model(checkpoint, device)
    cm = ConfusionMatrix(2)
    rand, perr = [], []
    for stem in VAL:
        image = read_image(DATA / "images" / f"{stem}.png", channels=1)
        gt = read_mask(DATA / "masks" / f"{stem}.png")
        x = image_to_tensor(image, ckpt.preprocessing)[None].to(device)
        if ckpt.preprocessing.resize == "resize":
            h, w = ckpt.preprocessing.size
            small = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear")
            out = torch.nn.functional.interpolate(
                model.forward_any(small).float(), size=gt.shape, mode="bilinear"
            )
        else:
            out = model.forward_any(x).float()
        pred = (out.sigmoid()[0, 0] > 0.5).long() if out.shape[1] == 1 else out.argmax(1)[0]
        pred = pred.cpu().numpy()
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        rand.append(membrane_rand_error(pred, gt, membrane=1))
        perr.append(pixel_error(pred, gt))
    m = cm.compute(["background", "membrane"])
    return {
        "dice": m["per_class"]["membrane"]["dice"],
        "iou": m["per_class"]["membrane"]["iou"],
        "pixel_error": float(np.mean(perr)),
        "rand_error": float(np.mean(rand)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes")
    parser.add_argument("--recipe", choices=["default", "milesial"], default="default")
    parser.add_argument("--preset", default="milesial")
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25, help="steps per epoch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--loss", default="ce+dice")
    parser.add_argument("--weight-map", action="store_true")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="keep the run folder here")
    parser.add_argument("--json", type=Path, help="also write the result row as JSON")
    args = parser.parse_args()
    if not (DATA / "images").is_dir():
        raise SystemExit(f"ISBI data not found at {DATA}")
    run = args.out or Path(tempfile.mkdtemp(prefix="isbi-"))
    cfg = recipe(args.recipe, args).replace(
        dataset=str(DATA),
        run_dir=str(run),
        val_stems=VAL,
        time_budget=args.budget,
        device=args.device,
    )
    start = time.monotonic()
    fit(cfg, overwrite=True)
    minutes = (time.monotonic() - start) / 60
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    images = state["step"] * cfg.batch_size
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    result = score(run / "last.pt", device if args.device == "auto" else args.device)
    row = {
        "recipe": args.recipe,
        "precision": state["config"]["precision"],
        "budget_min": args.budget,
        "used_min": minutes,
        "steps": state["step"],
        "images_per_s": images / (minutes * 60),
        **result,
    }
    print(f"\nISBI 2012, train 00-23, validate 24-29, {args.recipe} recipe, run {run}")
    print(
        f"{'recipe':<10}{'budget':>8}{'used':>7}{'steps':>7}{'img/s':>7}{'Dice':>8}{'IoU':>8}"
        f"{'pix err':>9}{'Rand err':>10}"
    )
    print(
        f"{row['recipe']:<10}{args.budget:>7.0f}m{minutes:>6.1f}m{row['steps']:>7}"
        f"{row['images_per_s']:>7.1f}{row['dice']:>8.3f}{row['iou']:>8.3f}"
        f"{row['pixel_error']:>9.4f}{row['rand_error']:>10.4f}"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
