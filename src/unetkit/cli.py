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
