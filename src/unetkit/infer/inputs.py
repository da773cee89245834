"""Finding and reading the input images of ``unetkit predict`` (``unetkit.infer.outputs``).

Files, folders and glob patterns become a list of image paths (``collect_inputs``); an image
read whole is read here (``read_input``); for TIFF pyramids, which levels fit in memory.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.imageio import match_channels, read_image
from ..data.largeimage import level_in_memory, output_stem
from ..errors import UnetkitError
from .options import OutputOptions

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _inside(path: Path, folder: Path) -> bool:
    """``path`` is a file of ``folder`` (False for a path that cannot be resolved: a symlink
    loop raises RuntimeError before Python 3.13; read_image reports it later)."""
    try:
        return path.resolve().parent == folder.resolve()
    except (OSError, RuntimeError):
        return False


def collect_inputs(inputs: Sequence[str | os.PathLike], exclude: Path | None = None) -> list[Path]:
    """Image files named by ``inputs``: files, folders (their images, not recursive), globs.

    Args:
        inputs: paths or glob patterns.
        exclude: a folder whose files are never inputs (the output folder).

    Returns:
        Unique paths in the order given (sorted within a folder or glob).

    Raises:
        UnetkitError: an input that matches nothing, or two images with the same stem (their
            outputs would collide).
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(path)
            continue
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            matches = sorted(
                Path(p)
                for p in glob.glob(str(item), recursive=True)
                if Path(p).suffix.lower() in IMAGE_SUFFIXES + (".npy",) and Path(p).is_file()
            )
        if exclude is not None:
            matches = [p for p in matches if not _inside(p, exclude)]
        if not matches:
            raise UnetkitError(f"{item}: no such file, and no images found there")
        found.extend(matches)
    unique = list(dict.fromkeys(found))
    stems: dict[str, Path] = {}
    for path in unique:
        stem = output_stem(path)
        if stem in stems:
            raise UnetkitError(
                f"{path} and {stems[stem]} have the same name {stem!r}; their outputs "
                "would overwrite each other (predict them into different folders)"
            )
        stems[stem] = path
    return unique


def read_input(path: Path, channels: int, options: OutputOptions) -> np.ndarray:
    """The image ``path`` read whole with ``channels`` channels (the pyramid level
    ``options.read_level`` when set)."""
    if options.read_level is None:
        image = read_image(path, channels=channels)
    else:  # a pyramid level that fits in memory (--level), read whole
        whole = level_in_memory(path, options.read_level, options.large_pixels)
        if whole is None:
            raise UnetkitError(f"{path}: level {options.read_level} no longer fits in memory")
        image = match_channels(whole, channels, str(path))
    return image


def level_fits(path: Path, level: int, limit: int) -> bool:
    """Pyramid level ``level`` of the TIFF ``path`` has at most ``limit`` pixels (False for a
    file or level that cannot be read: the path that reads it by region says why)."""
    from ..data.largeimage import LargeImage

    try:
        with LargeImage(path, level) as image:
            return image.height * image.width <= limit
    except UnetkitError:
        return False


def no_objects_by_region(path: Path, options: OutputOptions) -> str:
    """Why an image read by region gets no objects, and which of its levels would fit."""
    from ..data.largeimage import LargeImage

    limit = options.large_pixels
    level = options.level or 0
    with LargeImage(path, level) as image:
        first = 0 if image.axes in ("YX", "YXS") else 1  # CYX: channels first
        shapes = [shape[first : first + 2] for shape in image.level_shapes]
    # a level that fits is read whole (predict_paths), so those listed are smaller ones
    sizes = [f"{k} ({h} x {w})" for k, (h, w) in enumerate(shapes) if h * w <= limit]
    h, w = shapes[level]
    said = f"{path}: objects need the image in memory, and level {level} ({h} x {w} px) is read"
    said += f" by region (over {limit:,} px)"
    if sizes:
        return f"{said}; predict a level that fits with --level N: {', '.join(sizes)}"
    return f"{said}; no level of it fits in memory"
