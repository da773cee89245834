"""``summary.csv`` of ``unetkit predict``: one row per image (or per plane of a stack) with its
size, the classes present, every class's pixel area and, with objects, the object count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import write_csv


def summary_row(
    name: str, mask: np.ndarray, class_names: list[str], objects: int | None = None
) -> dict:
    """``summary.csv`` row: size, names of the classes present, pixel area of every class
    (and the object count, with objects)."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))
    return counts_row(name, mask.shape[:2], counts, class_names, objects)


def counts_row(
    name: str,
    size: tuple[int, int],
    counts: np.ndarray,
    class_names: list[str],
    objects: int | None = None,
) -> dict:
    """``summary_row`` from class pixel counts (images predicted band by band)."""
    row = {"image": name, "height": int(size[0]), "width": int(size[1])}
    if objects is not None:
        row["objects"] = objects
    row["classes_present"] = ";".join(
        class_names[i] for i in range(len(class_names)) if counts[i] > 0
    )
    row.update({f"{n}_pixels": int(counts[i]) for i, n in enumerate(class_names)})
    return row


def write_summary(
    path: Path, rows: list[dict], class_names: list[str], objects: bool = False
) -> None:
    """Write ``summary.csv`` (atomically): one row per image, columns as ``summary_row``."""
    fields = ["image", "height", "width"] + ["objects"] * objects + ["classes_present"]
    fields += [f"{n}_pixels" for n in class_names]
    write_csv(path, rows, fields)
