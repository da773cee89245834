"""The run folder: a fresh run's empty folder, a resumable run's checkpoint and config, and
what a start that never reached its first checkpoint left behind."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UnetkitError
from ..files import clean_stale_temps

log = logging.getLogger(__name__)

# settings a resumed run may change; anything else must match the run being resumed
RESUMABLE_CHANGES = (
    "dataset",  # where the run and its data are now (the data itself is checked by stems)
    "run_dir",
    "epochs",
    "time_budget",
    "device",
    "workers",
    "tensorboard",
    "panels",
    "save_every",
    "val_every",
    "early_stop",
)


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Config keys whose values differ between a saved run and the current request."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    return diffs


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool):
    """The checkpoint to resume from (``last.pt``, read once), or None for a fresh run in an
    empty folder.

    Raises:
        UnetkitError: resuming without a checkpoint, or a fresh run in a non-empty folder.
    """
    from ..checkpoint import load_checkpoint

    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            hint = (
                ": its first start stopped before the first checkpoint; run it again without "
                "--resume"
                if failed_start(run_dir)
                else ""
            )
            raise UnetkitError(f"{run_dir}: nothing to resume (no last.pt){hint}")
        ckpt = load_checkpoint(last)
        if not ckpt.train_state:
            raise UnetkitError(f"{last}: has no training state to resume from")
        return ckpt
    if failed_start(run_dir):  # e.g. killed before its first checkpoint
        log.info("%s: an earlier start left no checkpoint; starting again", run_dir)
        discard_failed_start(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise UnetkitError(
            f"{run_dir}: run folder is not empty "
            "(use --resume to continue it or --overwrite to start over)"
        )
    return None


def check_resumable(
    state: dict,
    cfg: TrainConfig,
    train: list[str],
    val: list[str],
    run_dir: Path,
    regions: dict[str, tuple[int, int, int, int]] | None = None,
) -> None:
    """Refuse to resume with another dataset (classes, stems, held-out regions) or another
    config."""
    diffs = resume_differences(state["config"], cfg.to_dict())
    assert cfg.classes is not None  # a resolved config
    data = state.get("data") or {}  # its "dataset" folder may have moved (RESUMABLE_CHANGES)
    expected: dict[str, object] = {"classes": list(cfg.classes), "train": train, "val": val}
    if regions:
        expected["val_regions"] = {s: list(b) for s, b in regions.items()}
    recorded = {key: data.get(key) for key in expected}
    if recorded != expected or (not regions and data.get("val_regions")):
        diffs.append("dataset: classes or image stems differ")
    if diffs:
        raise UnetkitError(
            f"{run_dir}: cannot resume with a different dataset or config ({'; '.join(diffs)})"
        )


# what a run writes before its first last.pt; nothing else is ever removed
_START_FILES = ("config.json", "history.csv", "curves.png", "best.pt")
_START_DIRS = ("panels", "tensorboard")


def failed_start(run_dir: Path) -> bool:
    """A folder holding only what a run writes before its first ``last.pt`` (a failed start)."""
    if not run_dir.is_dir() or (run_dir / "last.pt").exists():
        return False
    names = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    return "config.json" in names and names <= set(_START_FILES) | set(_START_DIRS)


def discard_failed_start(run_dir: Path) -> None:
    """Remove what a fresh run wrote when it stopped before its first ``last.pt``.

    Only unetkit's own start files are removed, with the temporary files of its writes
    whatever their age (``clean_stale_temps`` with ``min_age=0``: a start retried at once
    after a kill in its first ``best.pt`` write finds one seconds old), and the folder too
    when it is then empty; a folder with a ``last.pt`` is never touched.
    """
    import shutil

    if not run_dir.is_dir() or (run_dir / "last.pt").exists():
        return
    for name in _START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    clean_stale_temps(run_dir, min_age=0)
    for name in _START_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when empty
