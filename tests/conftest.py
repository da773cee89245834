"""Shared fixtures: a tiny synthetic labelme folder and the dataset ``prepare`` makes of it.

Both are built once per test session in a temporary folder; tests must not modify them
(copy first when a test needs to change files).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unetkit.data.prepare import prepare
from unetkit.data.synthetic import make_labelme_folder

LABELME_SIZE = (64, 80)  # (height, width): small, not square
LABELME_IMAGES = 6


@pytest.fixture(scope="session")
def labelme_folder(tmp_path_factory) -> Path:
    """6 labelme JSONs (64x80 RGB, classes cell + nucleus); img_000 and img_003 embed imageData."""
    return make_labelme_folder(
        tmp_path_factory.mktemp("labelme") / "lm",
        n_images=LABELME_IMAGES,
        size=LABELME_SIZE,
        seed=0,
    )


@pytest.fixture(scope="session")
def prepared_dataset(labelme_folder, tmp_path_factory) -> Path:
    """``prepare`` output of ``labelme_folder`` with discovered classes background/cell/nucleus."""
    out = tmp_path_factory.mktemp("prepared") / "ds"
    prepare(labelme_folder, out, val_fraction=0.34, seed=0)
    return out
