"""The one exception type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class UnetkitError(ValueError):
    """A problem with the user's input (a file, a flag, a size), stated in one line.

    The CLI prints ``str(error)`` on stderr and exits with code 2. Library callers can catch it
    like any ``ValueError``.
    """
