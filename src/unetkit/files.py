"""Atomic file and folder writes: every output lands under a temporary name, then is renamed.

Every temporary name is ``.NAME.unetkit-tmp-XXXXXXXX[.SUFFIX]`` beside the target ``NAME``
(8 random characters; the target's suffix kept for writers that look at it), so that what a
killed process leaves behind is recognisable, and ``clean_stale_temps`` removes it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

TEMP_TAG = ".unetkit-tmp-"
TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_TAG) + r"[a-z0-9_]{8}(\.[^.]*)?")
STALE_AFTER_S = 10.0  # a temporary file untouched this long belongs to no running write


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` keeps its previous content.
    ``suffix`` defaults to the target's suffix so writers that look at the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.stem}{TEMP_TAG}",
            suffix=path.suffix if suffix is None else suffix,
            dir=path.parent,
        )
    except OSError as exc:
        raise _not_written(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:  # disk full, read-only, permission denied: say so, in one line
        tmp.unlink(missing_ok=True)
        raise _not_written(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _not_written(path: Path, exc: OSError) -> Exception:
    from .errors import UnetkitError

    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    return UnetkitError(f"{path}: cannot write it ({exc.strerror or exc}); {kept}")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fields: list[str]) -> None:
    """Atomically write ``rows`` as CSV: a header of ``fields``, then one line per row, in
    ``fields``' order (a key missing from a row, or None, is an empty cell; a key not in
    ``fields`` is an error), ``\\n`` line ends, UTF-8; the header even without rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    Nothing is left at ``path`` if the body raises. An existing non-empty ``path`` is only
    replaced when ``overwrite`` is true (the check is the caller's job before heavy work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_TAG}", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            if not overwrite and any(path.iterdir()):
                raise FileExistsError(f"{path}: exists and is not empty")
            old = path.with_name(f".{path.name}{TEMP_TAG}{secrets.token_hex(4)}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_temps(
    folder: str | os.PathLike,
    min_age: float = STALE_AFTER_S,
    recursive: bool = False,
    targets: Iterable[Path] | None = None,
) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder``; returns them.

    Only files named as ``atomic_path`` names them (``TEMP_NAME``) and not modified for
    ``min_age`` seconds (a write in progress keeps touching its file) are removed; folders
    (``atomic_dir``'s), symbolic links and every other name are left alone. A missing
    ``folder`` is no error.

    Args:
        folder: the folder to clean (a run folder, a prediction output folder).
        min_age: seconds since the last modification; 0: whatever their age (for a writer
            whose targets are all in place: a temporary file of one of them can only be what
            a killed write left).
        recursive: also clean the folders inside (a run folder's ``panels/``).
        targets: only the temporary files of these files' writes (same stem); None: all.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    prefixes = None if targets is None else tuple(f".{t.stem}{TEMP_TAG}" for t in targets)
    removed = []
    now = time.time()
    for path in sorted(root.rglob(".*") if recursive else root.glob(".*")):
        if not TEMP_NAME.fullmatch(path.name):
            continue
        if prefixes is not None and not path.name.startswith(prefixes):
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            info = path.lstat()
            young = min_age > 0 and now - info.st_mtime < min_age
            if stat.S_ISREG(info.st_mode) and not young:
                path.unlink()
                removed.append(path)
    return removed


def remove_temp_dirs(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that killed ``atomic_dir`` writes of ``path`` left beside
    it, whatever their age; returns them.

    ``clean_stale_temps`` leaves folders alone (their time says nothing of writes deeper
    inside); this is for the one writer of ``path``, before it writes ``path`` again or once
    ``path`` is in place: a temporary folder of ``path`` then belongs to no running write.
    Only folders named ``.NAME.unetkit-tmp-XXXXXXXX`` for this ``NAME`` are removed, never
    through a symbolic link.
    """
    path = Path(path)
    prefix = f".{path.name}{TEMP_TAG}"
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for candidate in sorted(path.parent.iterdir()):
        name = candidate.name
        ours = name.startswith(prefix) and len(name) == len(prefix) + 8
        if not (ours and TEMP_NAME.fullmatch(name)):
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            if stat.S_ISDIR(candidate.lstat().st_mode):
                shutil.rmtree(candidate)
                removed.append(candidate)
    return removed
