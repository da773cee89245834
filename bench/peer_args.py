"""What the peer runners (``peer_stardist.py``, ``peer_cellpose.py``) share: their command
line and the exit status that says their peer cannot be imported. Plain Python, importable
from a peer's own interpreter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NOT_IMPORTABLE = 3  # dsb_instances.py skips a peer whose runner exits with this


def parse(doc: str | None) -> argparse.Namespace:
    """``TRAIN TEST OUT --budget MINUTES``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget", type=float, required=True, help="training minutes")
    return parser.parse_args()


def not_importable(err: ImportError) -> SystemExit:
    """The exit of a runner whose peer cannot be imported (raise what this returns)."""
    print(f"not importable: {err!r}", file=sys.stderr)
    return SystemExit(NOT_IMPORTABLE)
