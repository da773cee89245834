"""The strips of an image read by region, kept in its part folder until its mask is assembled
(``unetkit.infer.large``): what makes an interrupted prediction resume.

The mask is predicted in strips of ``TIFF_TILE`` (256) rows, one row of TIFF tiles
(``strips_of`` regroups the predicted bands). Each finished strip is compressed into its TIFF
tiles (``unetkit.infer.tiff_out.compress``) and written, under a temporary name renamed into
place, into the part folder ``.NAME.unetkit-part/`` beside the outputs, with ``job.json``
saying what is being predicted (``strip_job``: the input file, level, model file, prediction
settings). Once every strip is there, the mask is assembled from them and the folder is
removed. A run that was interrupted (killed, an error, Ctrl-C) and is started again with the
same command finds the folder, checks ``job.json`` and predicts only the strips missing: the
network starts at the first row of tiles that touches the first missing row, and every row comes
out exactly as in one uninterrupted run (``unetkit.infer.tiling.iter_bands``), so the final
files are identical, byte for byte. The strips do not depend on the mask's format (``NAME.tif``
or ``NAME.ome.zarr``). A part folder of another job (the input, the model or a setting changed)
is removed and the image predicted from the start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UnetkitError
from ..files import clean_stale_temps, write_bytes, write_text
from .tiff_out import TIFF_TILE

if TYPE_CHECKING:
    from .predict import Predictor

log = logging.getLogger(__name__)

PART_TAG = ".unetkit-part"
_MAGIC = b"UNETKIT-STRIP-1\n"


def part_dir(out_dir: Path, stem: str) -> Path:
    """The folder that holds the finished strips of ``NAME.tif`` until it is assembled."""
    return out_dir / f".{stem}{PART_TAG}"


class Strips:
    """The part folder of one image: ``job.json`` and one file per finished strip."""

    def __init__(self, folder: Path, job: dict):
        self.folder, self.job = folder, job

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.strip"

    def check(self) -> int:
        """Keep the folder if it belongs to this job, else remove it; the strips it holds."""
        if not self.folder.is_dir():
            return 0
        try:
            same = json.loads((self.folder / "job.json").read_text()) == self.job
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("%s: the strips there belong to another job; starting over", self.folder)
            shutil.rmtree(self.folder)
            return 0
        clean_stale_temps(self.folder)  # what a write killed mid-strip left
        return len(self.done())

    def done(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(p.stem) for p in self.folder.glob("[0-9]*.strip") if p.stem.isdigit()}

    def write(self, index: int, tiles: list[bytes]) -> None:
        if not (self.folder / "job.json").is_file():  # before the first strip, never after
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text(self.folder / "job.json", json.dumps(self.job, indent=1))
        lengths = np.array([len(tiles), *map(len, tiles)], "<u8").tobytes()
        write_bytes(self._path(index), _MAGIC + lengths + b"".join(tiles))

    def read(self, index: int, count: int) -> list[bytes]:
        """The ``count`` compressed tiles of a strip."""
        path = self._path(index)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnetkitError(f"{path}: strip {index} missing ({exc.strerror})") from None
        head = len(_MAGIC) + 8 * (count + 1)
        lengths = np.frombuffer(data[len(_MAGIC) : head], "<u8").astype(np.int64)
        if not data.startswith(_MAGIC) or len(lengths) != count + 1 or lengths[0] != count:
            raise UnetkitError(f"{path}: not a strip of {count} tiles")
        ends = head + np.cumsum(lengths[1:])
        if ends[-1] != len(data):
            raise UnetkitError(f"{path}: not a strip of {count} tiles")
        return [data[int(a) : int(b)] for a, b in zip([head, *ends[:-1]], ends)]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def remove_parts(out_dir: Path, stem: str) -> None:
    """Remove a part folder left beside finished outputs (a run stopped after assembling)."""
    folder = part_dir(out_dir, stem)
    if folder.is_dir() and not os.path.islink(folder):
        shutil.rmtree(folder, ignore_errors=True)


def strip_job(
    predictor: Predictor, path: Path, level: int, size: tuple[int, int], background: str | None
) -> dict:
    """What a part folder's strips were predicted from (equal dicts: the same strips)."""

    def identity(file: Path) -> list:
        stat = file.stat()
        return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]

    model = Path(predictor.info.source or "")
    config = predictor.config.to_dict()
    for name in ("device", "precision", "min_area"):  # resolved below; the preview's only
        config.pop(name, None)
    network = predictor.network
    return {
        "format": 1,
        "input": identity(path),
        "level": level,
        "size": list(size),
        "strip": TIFF_TILE,
        "model": identity(model) if model.is_file() else str(model),
        "predict": config,
        "device": network.device.type,
        "precision": network.precision,
        "background": background,
    }


def strips_of(
    bands: Iterable[tuple[int, int, np.ndarray]], r0: int, r1: int, tile: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Bands of rows ``[r0, r1)`` (``r0`` a multiple of ``tile``) regrouped into strips of
    ``tile`` rows: ``(strip index, rows)``. At most one strip (plus one band) is held."""
    pending: list[np.ndarray] = []
    held, index = 0, r0 // tile
    for _, _, band in bands:
        pending.append(band)
        held += band.shape[0]
        while pending and held >= min(tile, r1 - index * tile):
            need = min(tile, r1 - index * tile)
            rows = np.concatenate(pending, axis=0)
            yield index, rows[:need]
            rest = rows[need:]
            pending, held, index = ([rest] if len(rest) else []), len(rest), index + 1


def runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted strip indices as runs ``[a, b)`` of consecutive ones."""
    found: list[tuple[int, int]] = []
    for i in indices:
        if found and found[-1][1] == i:
            found[-1] = (found[-1][0], i + 1)
        else:
            found.append((i, i + 1))
    return found
