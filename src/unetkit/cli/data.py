"""The dataset commands: ``prepare`` (labelme -> dataset), ``verify``, and ``add-label``
(a predicted mask into its slide's OME-Zarr)."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import parse_roi


def prepare_cmd(
    labelme_dir: Path = typer.Argument(
        ..., help="Folder of labelme JSON files (searched recursively)."
    ),
    out_dir: Path = typer.Argument(..., help="Dataset folder to create."),
    labels: str = typer.Option(
        None, "--labels", help="Labels file (labelme's labels.txt) or a comma-separated list."
    ),
    val_fraction: float = typer.Option(
        0.2,
        "--val-fraction",
        help="Share of images for validation (0.2 on under 40 images: none; train then "
        "validates on a band of each).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val split."),
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Accept imagePath values outside LABELME_DIR."
    ),
    crop_roi: str = typer.Option(
        None,
        "--crop-roi",
        help="THRESHOLD,MIN_AREA,MAX_AREA[,MARGIN]: crop each image to its thresholded ROI.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT_DIR."),
) -> None:
    """Convert a labelme folder into a dataset: images/, masks/, overlays/, classes, split."""
    from ..data.prepare import prepare

    report = prepare(
        labelme_dir,
        out_dir,
        labels=labels,
        val_fraction=val_fraction,
        seed=seed,
        allow_outside=allow_outside,
        crop_roi=parse_roi(crop_roi),
        overwrite=overwrite,
    )
    shares = ", ".join(f"{c} {s:.1%}" for c, s in zip(report.classes, report.class_share))
    typer.echo(f"wrote {report.n_images} images to {report.out_dir}")
    typer.echo(f"classes: {', '.join(f'{i}={c}' for i, c in enumerate(report.classes))}")
    typer.echo(f"pixel share: {shares}")
    typer.echo(f"split: {len(report.split['train'])} train, {len(report.split['val'])} val")
    if report.split_note:
        typer.echo(f"  ({report.split_note})")
    typer.echo(f"objects: {report.n_objects} (one per shape or group_id) in instances/")
    for message in report.warnings:
        typer.echo(f"warning: {message}")


def verify_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (prepare output, VOC, imgs/+masks/)."),
    mask_suffix: str = typer.Option(
        None, "--mask-suffix", help="Mask name suffix for imgs/ + masks/ (e.g. _mask)."
    ),
) -> None:
    """Check a dataset folder and list every problem; exit 2 when there are errors."""
    from ..data.verify import check_dataset, format_findings

    report = check_dataset(dataset, mask_suffix=mask_suffix)
    findings = report.findings
    typer.echo(format_findings(findings, dataset, report))
    if any(f.level == "error" for f in findings):
        raise typer.Exit(2)


def add_label_cmd(
    mask: Path = typer.Argument(
        ..., help="A slide's mask from unetkit predict: NAME.ome.zarr (--zarr) or NAME.tif."
    ),
    slide: Path = typer.Argument(
        ..., help="The slide's own OME-Zarr image (NGFF 0.4 / Zarr v2 or 0.5 / Zarr v3)."
    ),
    name: str = typer.Option(
        None, "--name", help="The label image's name (default: the mask's NAME)."
    ),
) -> None:
    """Put a predicted mask into the slide's OME-Zarr as labels/NAME (napari, QuPath, MoBIE)."""
    from ..infer.zarr_out import add_label

    target = add_label(mask, slide, name)
    typer.echo(f"label {target.name} written: {target}")
