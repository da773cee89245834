"""The ``unetkit`` command line: each command a thin adapter over library functions.

Errors in the user's input print one line on stderr and exit with code 2 (a traceback only
with ``--debug``).

The package: ``app`` and ``main`` here, the commands by group (``models``, ``data``,
``train``, ``predict``, ``demo``), the flags they share and the parsers of flag values in
``options``, what ``--help`` shows as defaults in ``help``, exit codes in ``errors``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from .data import add_label_cmd, prepare_cmd, verify_cmd
from .demo import demo_cmd
from .errors import error_line, is_usage_error
from .help import click_command
from .models import export_cmd, info_cmd, models_cmd
from .predict import compare_cmd, evaluate_cmd, predict_cmd
from .train import train_cmd

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="U-Net segmentation: labelme folder -> dataset -> model -> masks, overlays, metrics.",
)


def _print_version(value: bool) -> None:
    """``--version``: the installed package's version (its metadata, from pyproject.toml)."""
    if value:
        from .. import __version__

        typer.echo(f"unetkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks for errors (also after the command's name)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    del debug, version  # debug is read by main() before the app runs; version is eager
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


# the commands, in the order ``unetkit --help`` lists them
app.command("models")(models_cmd)
app.command("info")(info_cmd)
app.command("prepare")(prepare_cmd)
app.command("verify")(verify_cmd)
app.command("train")(train_cmd)
app.command("predict")(predict_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("compare")(compare_cmd)
app.command("export")(export_cmd)
app.command("add-label")(add_label_cmd)
app.command("demo")(demo_cmd)


def _command() -> Any:
    """The click command behind ``app``, as ``--help`` shows it (``help.click_command``)."""
    return click_command(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0, 2 for the user's errors (one line), 1 for unetkit's bugs.

    ``--debug`` (anywhere before a ``--``) re-raises errors so that Python shows the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    args = [a for i, a in enumerate(args) if i >= end or a != "--debug"]
    try:
        # click returns (not raises) typer.Exit's code when standalone_mode is off
        result = _command().main(args=args, prog_name="unetkit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click's answer to Ctrl-C / EOF at a prompt
            return 1
        if debug and not is_usage_error(exc):
            raise
        code, line = error_line(exc)
        if line:
            typer.echo(line, err=True)
        return code
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


__all__ = ["app", "main"]
