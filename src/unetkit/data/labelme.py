"""Read labelme JSON files: parse and validate their shapes, decode the annotated image, and
turn label names into an explicit ordered class list; write labelme documents.

The format (labelme's README and ``labelme/_label_file.py``): a JSON object with ``shapes``
(each ``label``, ``points`` as ``[[x, y], ...]``, ``shape_type``, and for ``mask`` shapes a
base64 PNG ``mask``), ``imagePath`` (relative to the JSON file), optional base64 ``imageData``,
``imageHeight`` and ``imageWidth``. Coordinates beyond ``MAX_COORD`` are refused (PIL would
overflow painting them). ``__ignore__`` is labelme's ignore label (written as 255).

Painting the shapes into class masks and instance images is :mod:`unetkit.data.rasterize`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ..errors import UnetkitError
from .imageio import decode_image, open_image, read_image

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
IGNORE_VALUE = 255
# PIL draws in int32: past ~2**31 a shape is silently mis-painted; no image is this large
MAX_COORD = 10_000_000
LABELME_VERSION = "5.4.1"  # the labelme file format version unetkit writes
# shape type -> (min points, max points or None)
POINT_COUNTS = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "oriented_rectangle": (4, 4),
    "mask": (2, 2),
}


@dataclass
class Shape:
    """One validated labelme shape.

    Attributes:
        label: the class name as written in the file.
        shape_type: one of ``POINT_COUNTS``.
        points: (N, 2) float64 (x, y) pixel coordinates.
        mask: (h, w) bool patch for ``mask`` shapes, else None.
        index: position in the file's ``shapes`` list.
        group_id: labelme's ``group_id`` (an integer, or a string as some tools write it;
            None when null): shapes with the same group id and label are one object.
    """

    label: str
    shape_type: str
    points: np.ndarray
    mask: np.ndarray | None = None
    index: int = 0
    group_id: int | str | None = None


@dataclass
class LabelmeFile:
    """A parsed labelme JSON file (image not yet decoded)."""

    path: Path
    shapes: list[Shape]
    image_path: str | None
    image_data: bytes | None
    height: int | None
    width: int | None
    labels: set[str] = field(default_factory=set)


def _decode_b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64 ({exc})") from exc


def _parse_points(raw: object, shape_type: str) -> np.ndarray:
    try:
        points = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("points must be a list of [x, y] numbers") from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be a list of [x, y] pairs, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values")
    if points.size and np.abs(points).max() > MAX_COORD:
        raise ValueError(
            f"points have coordinates beyond +-{MAX_COORD} px (largest "
            f"{np.abs(points).max():.4g}); not a position in any image"
        )
    low, high = POINT_COUNTS[shape_type]
    if len(points) < low or (high is not None and len(points) > high):
        want = f"{low}" if low == high else f"at least {low}"
        noun = "point" if want == "1" else "points"
        raise ValueError(f"{shape_type} needs {want} {noun}, got {len(points)}")
    return points


def _parse_mask_patch(raw: object, points: np.ndarray) -> np.ndarray:
    data = _decode_b64(raw, "mask")
    try:  # the header first: a decompression bomb is refused before decoding
        with open_image(data, "mask", "mask") as img, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            patch = np.asarray(img)
    except UnetkitError as exc:
        raise ValueError(f"mask {str(exc).removeprefix('mask: cannot read mask: ')}") from None
    except Exception as exc:
        raise ValueError(f"mask is not a decodable image ({type(exc).__name__}: {exc})") from None
    patch = patch[..., 0] if patch.ndim == 3 else patch
    (x1, y1), (x2, y2) = points.astype(int)
    expected = (y2 - y1 + 1, x2 - x1 + 1)
    if patch.shape != expected:
        raise ValueError(
            f"mask patch is {patch.shape[0]}x{patch.shape[1]} (HxW) but its box "
            f"({x1},{y1})-({x2},{y2}) is {expected[0]}x{expected[1]}"
        )
    return patch.astype(bool)


def polygon_shape(label: str, points: list[list[float]], group_id: int | None = None) -> dict:
    """One labelme 5.x polygon shape (what ``predict --labelme`` writes)."""
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": "",
        "shape_type": "polygon",
        "flags": {},
        "mask": None,
    }


def labelme_document(shapes: list[dict], image_path: str, size: tuple[int, int]) -> dict:
    """A labelme 5.x document around ``shapes`` for an image of ``size`` (H, W), the image
    referenced by ``image_path`` (relative to the JSON file), not embedded."""
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(size[0]),
        "imageWidth": int(size[1]),
    }


def _parse_group_id(raw: object) -> int | str | None:
    if raw is None:
        return None
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, (int, str)) and not isinstance(raw, bool):
        return raw
    raise ValueError(f"group_id must be an integer or null, got {raw!r}")


def parse_shape(raw: object, index: int) -> Shape:
    """Validate one entry of ``shapes``.

    Args:
        raw: the JSON object.
        index: its position (for messages).

    Returns:
        A :class:`Shape`.

    Raises:
        ValueError: missing label, unknown shape type, wrong point count, bad mask patch, a
            ``group_id`` that is neither an integer, a string nor null.
    """
    if not isinstance(raw, dict):
        raise ValueError("is not an object")
    label = raw.get("label")
    if not isinstance(label, str) or not label:
        raise ValueError("has no label")
    shape_type = raw.get("shape_type") or "polygon"  # labelme's default
    if shape_type not in POINT_COUNTS:
        raise ValueError(
            f"unsupported shape_type {shape_type!r}; supported: {', '.join(POINT_COUNTS)}"
        )
    points = _parse_points(raw.get("points"), shape_type)
    mask = _parse_mask_patch(raw.get("mask"), points) if shape_type == "mask" else None
    group_id = _parse_group_id(raw.get("group_id"))
    return Shape(
        label=label, shape_type=shape_type, points=points, mask=mask, index=index,
        group_id=group_id,
    )  # fmt: skip


def load_labelme(path: str | os.PathLike) -> LabelmeFile:
    """Read and validate a labelme JSON file; every problem in it is reported at once.

    Args:
        path: the ``.json`` file.

    Returns:
        A :class:`LabelmeFile` (the image is decoded later by :func:`load_image`).

    Raises:
        UnetkitError: invalid JSON or malformed shapes (message lists each shape index).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnetkitError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise UnetkitError(f"{path}: not a labelme file (no 'shapes' list)")
    problems, shapes = [], []
    for i, raw in enumerate(doc["shapes"]):
        try:
            shapes.append(parse_shape(raw, i))
        except ValueError as exc:
            problems.append(f"shape {i}: {exc}")
    image_data = None
    if doc.get("imageData"):
        try:
            image_data = _decode_b64(doc["imageData"], "imageData")
        except ValueError as exc:
            problems.append(str(exc))
    image_path = doc.get("imagePath") or None
    if image_data is None and not isinstance(image_path, str):
        problems.append("neither imageData nor imagePath is given")
    if problems:
        raise UnetkitError(f"{path}: " + "; ".join(problems))
    sizes = [doc.get(k) for k in ("imageHeight", "imageWidth")]
    height, width = (int(v) if isinstance(v, (int, float)) else None for v in sizes)
    labels = {s.label for s in shapes}
    return LabelmeFile(path, shapes, image_path, image_data, height, width, labels)


def resolve_image_path(doc: LabelmeFile, root: Path, allow_outside: bool = False) -> Path:
    """Where ``imagePath`` points, relative to the JSON file (Windows separators accepted).

    Raises:
        UnetkitError: the path leaves ``root`` (unless ``allow_outside``) or does not exist.
    """
    raw = str(doc.image_path)
    parts = PureWindowsPath(raw).parts if "\\" in raw else PurePosixPath(raw).parts
    candidate = Path(*parts) if parts else Path(raw)
    try:
        image = (doc.path.parent / candidate).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise UnetkitError(f"{doc.path}: imagePath {raw!r} cannot be resolved ({exc})") from None
    if not allow_outside and not image.is_relative_to(root.resolve()):
        raise UnetkitError(
            f"{doc.path}: imagePath {raw!r} resolves outside {root} (use --allow-outside)"
        )
    if image.is_dir():
        raise UnetkitError(f"{doc.path}: imagePath {raw!r} is a folder, not an image file")
    if not image.is_file():
        raise UnetkitError(f"{doc.path}: image {raw!r} not found (looked for {image})")
    return image


def load_image(
    doc: LabelmeFile, root: Path, allow_outside: bool = False, channels: int | None = None
) -> np.ndarray:
    """Decode the annotated image: ``imageData`` when present, else ``imagePath``.

    The EXIF orientation is applied (labelme annotates the rotated image) and the size is
    checked against ``imageHeight`` / ``imageWidth``.

    Returns:
        (H, W, C) uint8 / uint16 array.

    Raises:
        UnetkitError: missing or unreadable image, or a size that disagrees with the JSON.
    """
    if doc.image_data is not None:
        image = decode_image(doc.image_data, channels, name=f"{doc.path} (imageData)")
    else:
        path = resolve_image_path(doc, root, allow_outside)
        image = read_image(path, channels)  # unreadable files: one line naming them
    h, w = image.shape[:2]
    if (doc.height is not None and doc.height != h) or (doc.width is not None and doc.width != w):
        raise UnetkitError(
            f"{doc.path}: imageHeight x imageWidth is {doc.height}x{doc.width} "
            f"but the image (EXIF orientation applied) is {h}x{w}"
        )
    return image


def read_label_list(labels: list[str] | str | os.PathLike) -> list[str]:
    """A class list from a list, a comma-separated string or a labels file (one per line)."""
    if isinstance(labels, (list, tuple)):
        names = [str(n).strip() for n in labels]
    elif isinstance(labels, Path) or (isinstance(labels, str) and Path(labels).is_file()):
        try:
            names = Path(labels).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UnetkitError(f"{labels}: cannot read the labels file ({exc})") from exc
    else:
        names = str(labels).split(",")
    names = [n.strip() for n in names if n.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UnetkitError(f"labels: duplicate class names {', '.join(duplicates)}")
    if not names:
        raise UnetkitError(f"labels: no class names in {labels!r}")
    return names


def class_values(explicit: list[str] | None, found: set[str]) -> tuple[list[str], dict[str, int]]:
    """The ordered class list and the label -> index map.

    With an explicit list (labelme's ``labels.txt`` convention): ``__ignore__`` maps to 255,
    ``_background_`` (or a prepended ``background``) is 0, the rest follow in order. Without one,
    the labels found are sorted after ``background`` = 0.

    Returns:
        (classes, values): ``classes[i]`` is the name of index i; ``values`` maps every
        accepted label (including ``__ignore__`` and ``_background_``) to its index.
    """
    if explicit is None:
        names = sorted(found - {IGNORE_LABEL, BACKGROUND_LABEL})
        classes = ["background", *names]
    else:
        names = [n for n in explicit if n != IGNORE_LABEL]
        if names and names[0] in (BACKGROUND_LABEL, "background", "Background"):
            classes = names
        else:
            classes = ["background", *[n for n in names if n != BACKGROUND_LABEL]]
    if len(classes) > IGNORE_VALUE:
        raise UnetkitError(f"{len(classes)} classes; at most {IGNORE_VALUE} fit in a mask PNG")
    values = {name: i for i, name in enumerate(classes)}
    values[BACKGROUND_LABEL] = 0
    values[IGNORE_LABEL] = IGNORE_VALUE
    return classes, values
