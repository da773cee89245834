"""The ``unetkit`` command line: each command a thin adapter over library functions.

Errors in the user's input print one line on stderr and exit with code 2 (a traceback only
with ``--debug``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from .errors import UnetkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="U-Net segmentation: labelme folder -> dataset -> model -> masks, overlays, metrics.",
)
_STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    _STATE["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


# ---------------------------------------------------------------------------------------------
# models, info (foundation)
# ---------------------------------------------------------------------------------------------
@app.command("models")
def models_cmd(
    size: int = typer.Option(256, "--size", help="Square input size for the table."),
    in_channels: int = typer.Option(None, "--in-channels", help="Override input channels."),
    num_classes: int = typer.Option(None, "--num-classes", help="Override classes/outputs."),
) -> None:
    """List the model presets: parameters, output size and GFLOPs for a --size input."""
    from .models.summary import preset_table

    overrides = {}
    if in_channels is not None:
        overrides["in_channels"] = in_channels
    if num_classes is not None:
        overrides["out_channels"] = num_classes
    typer.echo(preset_table(size, **overrides))


@app.command("info")
def info_cmd(checkpoint: Path = typer.Argument(..., help="A unetkit checkpoint (.pt).")) -> None:
    """Show a checkpoint's model config, classes, preprocessing and training state."""
    from .models.summary import checkpoint_summary

    typer.echo(checkpoint_summary(checkpoint))


# ---------------------------------------------------------------------------------------------
# data commands (prepare, verify) go below this line
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# training commands (train) go below this line
# ---------------------------------------------------------------------------------------------


@app.command("train")
def train_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (from prepare, VOC, images/+masks/)."),
    out: Path = typer.Option(None, "-o", "--out", help="Run folder for checkpoints and logs."),
    preset: str = typer.Option(None, "--preset", help="Model preset (see `unetkit models`)."),
    config: Path = typer.Option(None, "--config", help="JSON file with TrainConfig fields."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty run folder."),
    epochs: int = typer.Option(None, "--epochs"),
    batch_size: int = typer.Option(None, "--batch-size"),
    lr: float = typer.Option(None, "--lr"),
    patch_size: int = typer.Option(None, "--patch-size", help="Training patch / resize size."),
    resize: str = typer.Option(None, "--resize", help="random-crop | letterbox | resize | none"),
    base_width: int = typer.Option(None, "--base-width", help="Channels of the first level."),
    depth: int = typer.Option(None, "--depth", help="Number of down-sampling steps."),
    task: str = typer.Option(None, "--task", help="auto | multiclass | binary | regression"),
    loss: str = typer.Option(
        None, "--loss", help="auto | ce | bce | dice | ce+dice | bce+dice | mse | l1"
    ),
    class_weights: str = typer.Option(None, "--class-weights", help="'balanced' or w0,w1,..."),
    weight_map: bool = typer.Option(
        None, "--weight-map/--no-weight-map", help="The paper's border weight map."
    ),
    weight_map_objects: str = typer.Option(
        None, "--weight-map-objects", help="'foreground' or a class index (0 for ISBI)."
    ),
    optimizer: str = typer.Option(None, "--optimizer", help="adam | adamw | sgd | rmsprop"),
    momentum: float = typer.Option(None, "--momentum"),
    schedule: str = typer.Option(None, "--schedule", help="constant | cosine | poly | plateau"),
    steps_per_epoch: int = typer.Option(None, "--steps-per-epoch"),
    accumulate: int = typer.Option(None, "--accumulate", help="Gradient accumulation steps."),
    clip_grad: float = typer.Option(None, "--clip-grad"),
    early_stop: int = typer.Option(None, "--early-stop", help="Patience in validations."),
    val_fraction: float = typer.Option(None, "--val-fraction"),
    val_stems: str = typer.Option(None, "--val-stems", help="Comma-separated validation stems."),
    val_every: int = typer.Option(None, "--val-every"),
    save_every: int = typer.Option(None, "--save-every"),
    time_budget: float = typer.Option(None, "--time-budget", help="Minutes; stops cleanly."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16"),
    workers: int = typer.Option(None, "--workers"),
    seed: int = typer.Option(None, "--seed"),
    deterministic: bool = typer.Option(None, "--deterministic/--no-deterministic"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Augmentations on/off."),
    compile_: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    sync_bn: bool = typer.Option(None, "--sync-bn/--no-sync-bn"),
    tensorboard: bool = typer.Option(None, "--tensorboard/--no-tensorboard"),
) -> None:
    """Train a U-Net on a dataset folder; writes last.pt, best.pt, history.csv, curves.png."""
    from .train.cli_config import build_train_config
    from .train.fit import fit

    flags = {
        k: v
        for k, v in locals().items()
        if k not in ("dataset", "out", "config", "resume", "overwrite", "fit", "build_train_config")
    }
    cfg = build_train_config(dataset, out, config, resume, flags)
    run_dir = fit(cfg, resume=resume is not None, overwrite=overwrite)
    typer.echo(f"run folder: {run_dir}  (best.pt, last.pt, history.csv, curves.png, panels/)")


# ---------------------------------------------------------------------------------------------
# prediction commands (predict, evaluate, export) go below this line
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# demo goes below this line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning ``UnetkitError`` into exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's own usage errors
        return int(exc.code or 0)
    except (UnetkitError, FileNotFoundError, FileExistsError) as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2
        if isinstance(exc, click.exceptions.Abort):
            return 1
        if debug:
            raise
        typer.echo(
            f"error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
