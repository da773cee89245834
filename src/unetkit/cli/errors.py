"""An exception that ended a command -> the exit code and the one line printed on stderr.

The user's mistakes exit with 2, unetkit's bugs with 1 (``unetkit.cli.main`` applies it).
"""

from __future__ import annotations

from ..errors import UnetkitError


def is_usage_error(exc: Exception) -> bool:
    """A usage error of click (or of typer's vendored copy): bad flag, value or argument."""
    return callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code")


def error_line(exc: Exception) -> tuple[int, str]:
    """(exit code, the one line to print) for an exception that ended a command.

    The user's input (``UnetkitError``), files and folders (``OSError``: missing, exists,
    permission, disk full) and usage errors exit with 2 and say what is wrong; anything else
    is a bug in unetkit: exit 1, saying so.
    """
    if isinstance(exc, UnetkitError):
        return 2, f"error: {exc}"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return 2, f"error: {exc.filename}: {exc.strerror}"
        return 2, f"error: {exc}"
    if is_usage_error(exc):
        # a click exception (of click or of typer's vendored copy), checked by duck typing
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        if not message:  # no arguments at all: the help was shown
            return int(exc.exit_code), ""  # type: ignore[attr-defined]
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return int(exc.exit_code), f"error: {message}{hint}"  # type: ignore[attr-defined]
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return 1, (
        f"internal error: {type(exc).__name__}: {first} "
        "(run with --debug for a traceback; please report)"
    )
