"""The prediction commands: ``predict`` (masks, objects, overlays), ``evaluate`` (a model on a
dataset) and ``compare`` (predicted masks against true ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..config import PredictConfig
from ..errors import UnetkitError
from . import options as opt


@opt.inference_flags("min_area")
@opt.output_flags()
def predict_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) or exported ONNX file (.onnx)."),
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    cfg: PredictConfig = opt.FROM_FLAGS,
    objects: bool = typer.Option(
        False,
        "--objects",
        help="Semantic models: also objects (connected components); instance models always.",
    ),
    pixel_size: float = typer.Option(
        None,
        "--pixel-size",
        help="Physical size of a pixel in --pixel-unit (default: the TIFF's OME / ImageJ / "
        "resolution metadata): object areas and lengths in those units, and the masks' "
        "resolution / OME-Zarr scale. Implies objects for images read whole only.",
    ),
    pixel_unit: str = typer.Option(
        "um", "--pixel-unit", help="Unit of --pixel-size: nm, um, mm, cm or m."
    ),
    outputs: dict[str, Any] = opt.FROM_FLAGS,
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep finished outputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Predict masks, colour masks and overlays (+ summary.csv) for images of any size.

    Under torchrun the ranks share the images (and the strips of images read by region).
    """
    if pixel_size is not None and not pixel_size > 0:
        raise UnetkitError(f"--pixel-size must be > 0; got {pixel_size}")
    from ..checkpoint import load_checkpoint
    from ..device import performance_setup
    from ..infer.outputs import predict_paths
    from ..infer.predict import Predictor
    from ..infer.shard import join, rank_device

    performance_setup()
    ckpt = None if model.suffix.lower() == ".onnx" else load_checkpoint(model)  # read once
    shard = join(cfg.device)  # torchrun: this rank's share of the work (unetkit.infer.shard)
    if ckpt is not None and ckpt.task == "regression":
        if shard.enabled:
            raise UnetkitError(f"{model}: restoration models predict in one process only")
        from ..infer.restore import Restorer, restore_paths

        tiling = {"overlap": cfg.overlap, "blend": cfg.blend, "batch_size": cfg.batch_size}
        if cfg.tile is not None or cfg.strategy == "full":  # else tiles of the training size
            tiling["tile"] = cfg.tile
        restorer = Restorer.from_checkpoint(model, cfg.device, cfg.precision, ckpt, **tiling)
        report = restore_paths(
            restorer, inputs, out, skip_existing=skip_existing, progress=progress
        )
        typer.echo(f"{len(report.written)} restored, {len(report.failed)} failed -> {out}")
        if report.failed:
            raise typer.Exit(2)
        return
    predictor = Predictor.load(model, cfg, rank_device(cfg.device, shard), ckpt)
    report = predict_paths(
        predictor, inputs, out, skip_existing=skip_existing, progress=progress,
        objects=(objects or cfg.objects_between is not None) or None,
        pixel_size=pixel_size, pixel_unit=pixel_unit, shard=shard, **outputs,
    )  # fmt: skip
    if shard.is_main:  # the report is the whole run's on every rank
        typer.echo(
            f"{len(report.written)} predicted, {len(report.skipped)} skipped (existing), "
            f"{len(report.failed)} failed -> {out}"
        )
    if report.failed:
        raise typer.Exit(2)


def _print_metrics(metrics: dict, out: Path) -> None:
    shown = ("mean_iou", "mean_dice", "pixel_accuracy", "pixel_error", "adapted_rand_error")
    for key in shown:
        if metrics.get(key) is not None:
            typer.echo(f"{key:20s} {metrics[key]:.4f}")
    objects = metrics.get("objects") or {}
    for key in ("map", "ap_50", "pq", "f1_50"):
        value = objects.get(key)
        if isinstance(value, float):
            typer.echo(f"objects {key:12s} {value:.4f}")
    if objects.get("n_true") is not None:  # what a count can be trusted by
        typer.echo(
            f"objects count        {objects['n_pred']} predicted / {objects['n_true']} true, "
            f"{objects['merges']} merges, {objects['splits']} splits"
        )
    typer.echo(f"report: {out} (metrics.json, per_image.csv, confusion.csv, confusion.png)")


@opt.inference_flags()
def evaluate_cmd(
    first: Path = typer.Argument(..., help="MODEL: a checkpoint (.pt) or an ONNX export."),
    second: Path = typer.Argument(..., help="DATASET folder (images/ + masks/)."),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    split: str = typer.Option("auto", "--split", help="auto (val if defined) | all | NAME."),
    cfg: PredictConfig = opt.FROM_FLAGS,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    rand_error: bool = opt.RAND_ERROR,
) -> None:
    """Score a model on the images of a dataset it did not train on: metrics + report."""
    if first.is_dir():
        raise UnetkitError(
            f"{first}: a folder, not a model; to score predicted masks against true masks "
            f"use `unetkit compare {first} {second} -o {out}`"
        )
    from ..device import performance_setup
    from ..infer.evaluate import evaluate_model

    performance_setup()
    metrics = evaluate_model(
        first, second, out, split, cfg, cfg.device, progress, rand_error=rand_error
    )
    _print_metrics(metrics, out)


def compare_cmd(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks (NAME.png)."),
    gt_dir: Path = typer.Argument(..., help="Folder of true masks (NAME.png), or a dataset."),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classes (default: from data)."),
    classes: str = typer.Option(None, "--classes", help="Class names a,b,c (index order)."),
    ignore_index: int = typer.Option(255, "--ignore-index", help="True-mask value not scored."),
    rand_error: bool = opt.RAND_ERROR,
) -> None:
    """Score predicted masks against true masks (no model): metrics + report."""
    from ..infer.evaluate import evaluate_dirs

    names = [c.strip() for c in classes.split(",")] if classes else None
    metrics = evaluate_dirs(
        pred_dir, gt_dir, out, num_classes, names, ignore_index, rand_error=rand_error
    )
    _print_metrics(metrics, out)
