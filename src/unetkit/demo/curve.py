"""How many images to annotate: the demo's recipe on nested subsets of its training images.

Each subset is the first ``n`` of one shuffle of the training split (so the 2 images are
among the 4, the 4 among the 8), prepared from its own labelme files as a user with ``n``
annotated images would (``prepare``'s defaults: under 40 images none is held out whole), and
trained with the same recipe and the same number of steps as the demo's own run. Every model
is scored on the demo's held-out images: foreground Dice pooled over their pixels, every
class but the background against the background. A per-image Otsu threshold (no learning)
is the line to beat.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_csv

SIZES = (2, 4, 8)  # besides the demo's whole training split


@dataclass(frozen=True)
class CurvePoint:
    """One model of the curve: trained on ``images`` annotated images."""

    images: int
    dice: float  # foreground Dice pooled over the held-out pixels
    ratio: float  # predicted / true foreground pixels
    steps: int
    run: str  # its run folder, relative to the demo folder


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"2,4,8"`` -> (2, 4, 8): sorted, no repeats; ``""`` -> () (no curve).

    Raises:
        ValueError: a part that is not a whole number of at least 1.
    """
    sizes = set()
    for part in (p.strip() for p in text.split(",")):
        if part:
            if not part.isdigit() or int(part) < 1:
                raise ValueError(f"learning-curve sizes are whole numbers >= 1; got {part!r}")
            sizes.add(int(part))
    return tuple(sorted(sizes))


def nested_subsets(stems: Sequence[str], sizes: Sequence[int], seed: int) -> dict[int, list[str]]:
    """Size -> the sorted first ``size`` stems of one seeded shuffle of ``stems`` (nested);
    sizes not below ``len(stems)`` are left out (the whole split is the demo's own run)."""
    order = random.Random(seed).sample(sorted(stems), len(stems))
    return {n: sorted(order[:n]) for n in sizes if n < len(stems)}


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: Otsu's threshold of the grey image, the side with less than half the
    pixels taken as the foreground (bright objects on dark, or dark on bright); none in an
    image without contrast."""
    from ..infer.background import above_otsu

    above = above_otsu(image)
    if above is None:
        return np.zeros(image.shape[:2], dtype=bool)
    return ~above if above.mean() > 0.5 else above


def foreground_scores(
    predict: Callable[[np.ndarray], np.ndarray], pairs: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """(Dice, predicted / true) of the foreground (class > 0) pooled over ``pairs`` of
    (image, true class mask); ``predict`` returns a foreground or class mask."""
    inter = pred_sum = true_sum = 0
    for image, truth in pairs:
        pred = np.asarray(predict(image)) > 0
        fg = truth > 0
        inter += int(np.count_nonzero(pred & fg))
        pred_sum += int(np.count_nonzero(pred))
        true_sum += int(np.count_nonzero(fg))
    dice = 2 * inter / (pred_sum + true_sum) if pred_sum + true_sum else 1.0
    return dice, (pred_sum / true_sum if true_sum else float("nan"))


def _subset_labelme(labelme: Path, stems: Sequence[str], out: Path) -> Path:
    """A labelme folder of ``stems``' JSON files and the images beside them."""
    out.mkdir(parents=True, exist_ok=True)
    for path in labelme.iterdir():
        if path.stem in set(stems) and path.is_file():
            shutil.copy2(path, out / path.name)
    return out


def learning_curve(
    out: Path,
    labelme: Path,
    split: dict[str, list[str]],
    classes: Sequence[str],
    full_run: Path,
    train: Callable[[Path, Path], Path],
    sizes: Sequence[int] = SIZES,
    *,
    seed: int = 0,
) -> tuple[list[CurvePoint], float]:
    """Train ``train(dataset, run_dir) -> best checkpoint`` on each nested subset of
    ``split["train"]`` (prepared with the whole set's ``classes``, so a class a subset lacks
    keeps its value) and score every model, ``full_run``'s included, on ``split["val"]``
    (read from ``out/dataset``, the whole set as ``prepare`` wrote it).

    Writes ``out/curve/`` (one folder per size: labelme subset, dataset, run; an earlier
    one is replaced), ``out/curve/learning_curve.csv`` and ``out/curve/learning_curve.png``.

    Returns:
        The points, fewest images first, and Otsu's Dice on the same images.
    """
    from ..data.imageio import read_image, read_mask
    from ..data.prepare import prepare
    from ..plots import plot_learning_curve

    dataset = out / "dataset"
    pairs = [
        (read_image(dataset / "images" / f"{s}.png"), read_mask(dataset / "masks" / f"{s}.png"))
        for s in split["val"]
    ]
    runs = {n: (out / "curve" / f"{n:03d}_images", stems)
            for n, stems in nested_subsets(split["train"], sizes, seed).items()}  # fmt: skip
    points = []
    for n, (folder, stems) in sorted(runs.items()):
        if folder.exists():  # an earlier demo's, in a folder the caller lets us overwrite
            shutil.rmtree(folder)
        subset = _subset_labelme(labelme, stems, folder / "labelme")
        prepare(subset, folder / "dataset", labels=list(classes), seed=seed)
        points.append(_score(train(folder / "dataset", folder / "run"), n, out, pairs))
    points.append(_score(full_run, len(split["train"]), out, pairs))
    otsu, _ = foreground_scores(otsu_foreground, pairs)
    rows = [{"images": p.images, "foreground_dice": round(p.dice, 4),
             "predicted_to_true": round(p.ratio, 4), "steps": p.steps, "run": p.run}
            for p in points]  # fmt: skip
    rows.append({"images": "otsu", "foreground_dice": round(otsu, 4)})
    write_csv(out / "curve" / "learning_curve.csv", rows, list(rows[0]))
    plot_learning_curve(
        {p.images: [p.dice] for p in points},
        otsu,
        out / "curve" / "learning_curve.png",
        title=f"demo: {len(pairs)} held-out images, the same recipe and steps per run",
        ylabel="foreground Dice (pooled over held-out pixels)",
        label="one run per size",
    )
    return points, otsu


def _score(
    checkpoint: Path, images: int, out: Path, pairs: Sequence[tuple[np.ndarray, np.ndarray]]
) -> CurvePoint:
    from ..checkpoint import load_checkpoint
    from ..config import PredictConfig
    from ..infer.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, PredictConfig())
    dice, ratio = foreground_scores(predictor.predict_mask, pairs)
    last = checkpoint.parent / "last.pt"  # the steps trained; best.pt's are where it was saved
    state = load_checkpoint(last if last.is_file() else checkpoint).train_state or {}
    steps = int(state.get("step", 0))
    return CurvePoint(images, dice, ratio, steps, checkpoint.parent.relative_to(out).as_posix())
