"""A foreground threshold calibrated on each semantic model's own validation pixels, against
the argmax, on the DSB 2018 dev test images (``bench/dsb.py``'s split).

For each run folder (``best.pt`` of a two-class DSB model, e.g. the learning curve's
``--out`` folders): the probabilities of its validation images (the stems or held-out bands
recorded in the checkpoint) and of the 19 test images, cached under ``--cache``; pooled
foreground Dice and predicted / true foreground ratio at thresholds 0.10-0.70, on the
validation pixels and on the test images; then the test scores at the argmax (0.5), at the
threshold with the best validation Dice, and at the one whose validation ratio is nearest 1.

    python bench/calibrated_threshold.py DIR/n008_seed0 DIR/n016_seed0 DIR/n070_seed0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dsb import DATA, split  # noqa: E402

THRESHOLDS = [round(float(t), 2) for t in np.arange(0.10, 0.71, 0.05)]


def foreground(predictor, stem: str, cache: Path, tag: str) -> np.ndarray:
    """The foreground probability of one DSB image (cached as float16)."""
    from unetkit.data.imageio import read_image

    path = cache / f"{tag}-{stem}.npy"
    if not path.is_file():
        probs = predictor.predict_proba(read_image(DATA / "images" / f"{stem}.png"))
        np.save(path, probs[1].astype(np.float16))
    return np.load(path).astype(np.float32)


def scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[float, tuple[float, float]]:
    """Threshold -> (pooled Dice, predicted / true foreground)."""
    out = {}
    for t in THRESHOLDS:
        inter = predicted = true = 0
        for prob, truth in pairs:
            mask = prob > t
            inter += int((mask & truth).sum())
            predicted, true = predicted + int(mask.sum()), true + int(truth.sum())
        out[t] = (2 * inter / max(predicted + true, 1), predicted / max(true, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding best.pt")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/calibrated-threshold"))
    args = parser.parse_args()
    from unetkit.checkpoint import load_checkpoint
    from unetkit.data.imageio import read_mask
    from unetkit.infer import Predictor

    _, test, _ = split()
    args.cache.mkdir(parents=True, exist_ok=True)

    def truth(stem: str) -> np.ndarray:
        return read_mask(DATA / "masks" / f"{stem}.png") > 0

    for run in args.runs:
        ckpt_path = run / "best.pt"
        data = (load_checkpoint(ckpt_path).train_state or {})["data"]
        predictor = Predictor.from_checkpoint(ckpt_path, device="cpu")
        tag = str(run.resolve()).strip("/").replace("/", "_")
        val = [(foreground(predictor, s, args.cache, tag), truth(s)) for s in data.get("val") or []]
        for stem, (y0, y1, x0, x1) in (data.get("val_regions") or {}).items():
            band = (slice(y0, y1), slice(x0, x1))
            val.append((foreground(predictor, stem, args.cache, tag)[band], truth(stem)[band]))
        tested = [(foreground(predictor, s, args.cache, tag), truth(s)) for s in test]
        on_val, on_test = scores(val), scores(tested)
        best = max(on_val, key=lambda t: on_val[t][0])
        level = min(on_val, key=lambda t: abs(on_val[t][1] - 1))
        print(f"{run}: {len(data['train'])} training images")
        for name, t in (("argmax", 0.5), ("best val Dice", best), ("val ratio 1", level)):
            dice, ratio = on_test[t]
            print(f"  {name:<14} t {t:.2f}  test Dice {dice:.3f} ratio {ratio:.3f}   "
                  f"(val {on_val[t][0]:.3f} / {on_val[t][1]:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
