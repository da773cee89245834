"""``unetkit demo``: the whole system on data it makes itself, in a few minutes on a CPU.

synthetic labelme folder -> prepare -> verify -> train -> evaluate (held-out) -> predict
(held-out + one large tiled image) -> the same recipe on 2, 4 and 8 of the training images
(a learning curve, :mod:`unetkit.demo.curve`) -> report.html with metrics, curves, panels,
overlays, the learning curve, and the cells counted as objects (connected components of each
class, scored against the shapes ``prepare`` wrote to ``instances/``, with an object table
and an object overlay; :mod:`unetkit.demo.report`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import AugmentConfig, DataConfig, PredictConfig, TrainConfig
from ..errors import UnetkitError
from ..files import write_text
from ..models.presets import preset_config
from .curve import SIZES, CurvePoint, learning_curve
from .report import fmt_score, write_report


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured."""

    out_dir: Path
    metrics: dict
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    objects: dict[str, int] = field(default_factory=dict)  # predicted objects per image file
    curve: list[CurvePoint] = field(default_factory=list)  # fewest training images first
    otsu_dice: float | None = None  # the learning curve's no-learning line


def demo_config(
    dataset: Path, run_dir: Path, budget_s: float, seed: int, epochs: int = 12
) -> TrainConfig:
    """The demo's training recipe: a narrow milesial U-Net on 128 px crops, bf16 where fast."""
    return TrainConfig(
        dataset=str(dataset),
        run_dir=str(run_dir),
        preset="milesial",
        model=preset_config("milesial", base_width=16, depth=3),
        data=DataConfig(channels=3, resize="random-crop", size=(128, 128)),
        augment=AugmentConfig(affine=0.3, elastic=0.3, rotate_deg=10.0),
        loss="ce+dice",
        optimizer="adamw",
        lr=3e-3,
        schedule="cosine",
        warmup_epochs=1,
        epochs=epochs,
        batch_size=8,
        steps_per_epoch=10,
        val_every=4,
        time_budget=budget_s / 60,
        seed=seed,
        panels=3,
    )


def run_demo(
    out_dir: str | Path,
    *,
    n_images: int = 24,
    size: int = 160,
    budget_s: float = 90,
    large: tuple[int, int] = (1200, 1600),
    epochs: int = 12,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    curve_sizes: tuple[int, ...] = SIZES,
) -> DemoResult:
    """Run the demo into ``out_dir``; returns its metrics and timings. ``budget_s`` and
    ``epochs`` bound each training run: the demo's own and one per ``curve_sizes`` entry
    below the number of training images (``()``: no learning curve).

    Raises:
        UnetkitError: ``out_dir`` exists and is not empty (unless ``overwrite``), or a stage
            found a problem (e.g. ``verify`` reporting errors).
    """
    from ..data.prepare import prepare
    from ..data.synthetic import make_image_and_mask, make_labelme_folder
    from ..data.verify import verify
    from ..data.writers import write_image
    from ..infer.evaluate import evaluate_model
    from ..infer.outputs import predict_paths
    from ..infer.predict import Predictor
    from ..train.fit import fit

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UnetkitError(f"{out}: demo folder is not empty (use --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        times[name] = now - clock
        clock = now

    labelme = make_labelme_folder(out / "labelme", n_images=n_images, size=(size, size), seed=seed)
    lap("synthesise")
    report = prepare(labelme, out / "dataset", val_fraction=0.25, seed=seed, overwrite=overwrite)
    lap("prepare")
    errors = [f for f in verify(out / "dataset") if f.level == "error"]
    if errors:
        raise UnetkitError(
            f"{out / 'dataset'}: verify found {len(errors)} problem(s): {errors[0].message}"
        )
    lap("verify")
    run = fit(
        demo_config(out / "dataset", out / "run", budget_s, seed, epochs), overwrite=overwrite
    )
    lap("train")
    metrics = evaluate_model(
        run / "best.pt", out / "dataset", out / "evaluation", split="val", progress=progress
    )
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    lap("evaluate")
    image, _ = make_image_and_mask(large, seed=seed + 1000, classes=report.classes[1:])
    write_image(out / "large" / "large.png", image)
    predictor = Predictor.from_checkpoint(run / "best.pt", PredictConfig(strategy="auto"))
    val_images = [out / "dataset" / "images" / f"{s}.png" for s in report.split["val"]]
    predicted = predict_paths(
        predictor,
        [*val_images, out / "large" / "large.png"],
        out / "predictions",
        progress=progress,
        objects=True,
    )
    if predicted.failed:
        raise UnetkitError(f"demo prediction failed: {predicted.failed[0][1]}")
    lap("predict")
    counts = {row["image"]: row["objects"] for row in predicted.rows}
    points: list[CurvePoint] = []
    otsu = None
    if curve_sizes:

        def train(dataset: Path, run_dir: Path) -> Path:
            return fit(demo_config(dataset, run_dir, budget_s, seed, epochs)) / "best.pt"

        points, otsu = learning_curve(
            out,
            labelme,
            report.split,
            report.classes,
            run / "best.pt",
            train,
            curve_sizes,
            seed=seed,
        )
        lap("learning curve")
    page = write_report(out, metrics, times, report.split["val"], counts, (points, otsu))
    return DemoResult(out, metrics, times, page, counts, points, otsu)


def _objects_line(result: DemoResult) -> str:
    obj = result.metrics.get("objects") or {}
    counted = sum(result.objects.values())
    return (
        f"objects: {counted} counted in {len(result.objects)} predicted images; held-out "
        f"AP@0.5 {fmt_score(obj.get('ap_50'))}, {obj.get('n_pred', 0)} predicted vs "
        f"{obj.get('n_true', 0)} true"
    )


def summary_text(result: DemoResult) -> str:
    """The one-screen summary printed at the end of ``unetkit demo``."""
    m, out = result.metrics, result.out_dir
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    lines = [
        f"unetkit demo finished in {sum(result.seconds.values()):.0f} s ({stages})",
        f"held-out mean IoU {m.get('mean_iou', 0):.3f}, mean Dice {m.get('mean_dice', 0):.3f}, "
        f"pixel accuracy {m.get('pixel_accuracy', 0):.3f}",
        _objects_line(result),
        *_curve_lines(result),
        "",
        f"  labelme annotations   {out / 'labelme'}",
        f"  prepared dataset      {out / 'dataset'}  (images/, masks/, overlays/, dataset.json)",
        f"  training run          {out / 'run'}  (best.pt, history.csv, curves.png, panels/)",
        f"  evaluation            {out / 'evaluation'}  (metrics.json, confusion.png)",
        f"  predictions           {out / 'predictions'}  (masks, overlays, objects, summary.csv)",
        f"  report                {result.report}",
    ]
    if result.curve:
        lines.insert(-1, f"  learning curve        {out / 'curve'}  (learning_curve.png, .csv)")
    return "\n".join(lines)


def _curve_lines(result: DemoResult) -> list[str]:
    if not result.curve:
        return []
    points = ", ".join(f"{p.images} images {p.dice:.3f}" for p in result.curve)
    return [f"learning curve (foreground Dice): {points}; Otsu {fmt_score(result.otsu_dice)}"]
