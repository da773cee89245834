"""The report folder of ``evaluate``: ``metrics.json`` (as ``unetkit.infer.scoring`` computes
them), ``per_image.csv`` (one row per image), ``confusion.csv`` (rows = truth, columns =
prediction) and ``confusion.png``, each written atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_csv, write_text
from ..plots import confusion_png

log = logging.getLogger(__name__)


def write_report(
    out_dir: str | os.PathLike,
    metrics: dict[str, Any],
    rows: list[dict],
    matrix: np.ndarray,
    class_names: list[str],
) -> Path:
    """Write ``metrics.json``, ``per_image.csv``, ``confusion.csv`` and ``confusion.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_csv(out / "per_image.csv", rows, list(rows[0]))
    table = [
        {"true\\pred": name, **{n: int(v) for n, v in zip(class_names, matrix[i])}}
        for i, name in enumerate(class_names)
    ]
    write_csv(out / "confusion.csv", table, ["true\\pred", *class_names])
    confusion_png(matrix, class_names, out / "confusion.png")
    log.info("report written to %s", out)
    return out
