"""Where the real data sets live for the slow tests: ``$UNETKIT_SHARED_DATA`` if set, else
``../shared/data`` beside the repository (as CI and the benches have it)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("UNETKIT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
ISBI = SHARED_DATA / "isbi2012"
DSB = SHARED_DATA / "dsb2018-dev"
