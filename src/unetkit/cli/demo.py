"""``unetkit demo``: a synthetic dataset, trained, evaluated and predicted, in report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import parse_size_flag


def demo_cmd(
    out: Path = typer.Option(Path("demo"), "-o", "--out", help="Folder for everything it makes."),
    time_budget: float = typer.Option(
        1.5, "--time-budget", help="Training minutes at most (the unit of train's flag)."
    ),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs (10 steps each) at most."),
    images: int = typer.Option(24, "--images", help="Synthetic images to make."),
    large: str = typer.Option("1200x1600", "--large", help="HxW of the large tiled image."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty folder."),
) -> None:
    """Make a synthetic labelme dataset, train, evaluate, predict, and write report.html."""
    from ..demo import run_demo, summary_text
    from ..device import performance_setup

    h, w = parse_size_flag(large, "--large")
    performance_setup()
    result = run_demo(
        out,
        n_images=images,
        budget_s=60 * time_budget,
        large=(h, w),
        epochs=epochs,
        seed=seed,
        overwrite=overwrite,
    )
    typer.echo(summary_text(result))
