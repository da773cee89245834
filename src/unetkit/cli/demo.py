"""``unetkit demo``: a synthetic dataset, trained, evaluated and predicted, in report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import parse_size_flag


def demo_cmd(
    out: Path = typer.Option(Path("demo"), "-o", "--out", help="Folder for everything it makes."),
    time_budget: float = typer.Option(
        1.5, "--time-budget", help="Minutes at most of each training run (train's unit)."
    ),
    epochs: int = typer.Option(
        12, "--epochs", help="Epochs (10 steps each) at most of each training run."
    ),
    images: int = typer.Option(24, "--images", help="Synthetic images to make."),
    large: str = typer.Option("1200x1600", "--large", help="HxW of the large tiled image."),
    curve: str = typer.Option(
        "2,4,8",
        "--curve",
        help="Learning curve: the same recipe on this many of the training images too "
        "('' for none).",
    ),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty folder."),
) -> None:
    """Make a synthetic labelme dataset, train, evaluate, predict, and write report.html."""
    from ..demo import run_demo, summary_text
    from ..demo.curve import parse_sizes
    from ..device import performance_setup
    from ..errors import UnetkitError

    h, w = parse_size_flag(large, "--large")
    try:
        sizes = parse_sizes(curve)
    except ValueError as exc:
        raise UnetkitError(f"--curve: {exc}") from None
    performance_setup()
    result = run_demo(
        out,
        n_images=images,
        budget_s=60 * time_budget,
        large=(h, w),
        epochs=epochs,
        seed=seed,
        overwrite=overwrite,
        curve_sizes=sizes,
    )
    typer.echo(summary_text(result))
