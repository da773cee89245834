"""Progress bars: tqdm on a terminal (or in a notebook), plain lines everywhere else.

tqdm redraws its bar with carriage returns; written to a log file (stderr redirected, a batch
job, CI) that is one endless line of repeated bars. ``progress`` gives tqdm where someone
watches, and otherwise a few whole lines: one every ``every`` of the way (10 % by default) for
bars that stay (``leave=True``), none for transient ones (an epoch's batches, an image's
tiles), whose outcome the caller reports in its own line.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm as _terminal_tqdm

with warnings.catch_warnings():  # in a notebook it warns that the widget is "experimental"
    warnings.simplefilter("ignore")
    from tqdm.autonotebook import tqdm as _auto_tqdm  # tqdm itself outside notebooks


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed stream
        return False


def progress(
    iterable: Iterable | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    disable: bool = False,
    *,
    leave: bool = True,
    initial: int = 0,
    every: float = 0.1,
    stream: TextIO | None = None,
    **tqdm_options: Any,
):
    """A progress bar over ``iterable`` (or updated by hand with ``update(n)``).

    Args:
        iterable: what to iterate over; None for a bar driven by ``update``.
        desc: the bar's name, starting each plain line.
        total: the number of steps (default: ``len(iterable)`` where it has one).
        unit: the name of one step.
        disable: show nothing at all.
        leave: keep the finished bar; transient bars (False) print no plain lines.
        initial: steps already done (a resumed epoch).
        every: plain lines are printed each time this share of ``total`` is passed.
        stream: where to write (default: ``sys.stderr`` at the time of the call).
        tqdm_options: passed on to tqdm on a terminal (``dynamic_ncols`` ...).

    Returns:
        A ``tqdm`` bar on a terminal or in a notebook, else a ``PlainProgress`` with the same
        ``update`` / ``set_postfix`` / ``close`` / iteration / context-manager interface.
    """
    stream = sys.stderr if stream is None else stream
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    notebook = stream is sys.stderr and _auto_tqdm is not _terminal_tqdm  # the widget
    if not disable and (notebook or _is_terminal(stream)):
        bar = _auto_tqdm if notebook else _terminal_tqdm
        shown = {"desc": desc, "unit": unit, "leave": leave, "initial": initial, "file": stream}
        return bar(iterable, total=total, **shown, **tqdm_options)
    quiet = disable or not leave
    return PlainProgress(iterable, desc, total, unit, initial, every, None if quiet else stream)


class PlainProgress:
    """A progress report in whole lines: ``desc: n/total unit (p%), s.s s, key=value``."""

    def __init__(
        self,
        iterable: Iterable | None,
        desc: str,
        total: int | None,
        unit: str,
        initial: int,
        every: float,
        stream: TextIO | None,
    ):
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n, self.every, self.stream = initial, every, stream
        self.postfix = ""
        self.start = time.monotonic()
        self._shown = self._step()  # the last share of the way that was reported
        self._closed = False

    def _step(self) -> int:
        if not self.total or self.every <= 0:
            return 0
        return int(min(self.n, self.total) / self.total / self.every + 1e-9)

    def _line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {done} {self.unit}{share}, {time.monotonic() - self.start:.1f} s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _write(self) -> None:
        if self.stream is not None:
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        step = self._step()
        if step > self._shown:
            self._shown = step
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.total and self.n:  # no total, so no shares of the way: one line at the end
            self._write()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
