"""What a training run leaves behind: history.csv, curves.png, panels, TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import plots, viz
from ..config import DataConfig
from ..files import write_csv

log = logging.getLogger(__name__)


def tensorboard_writer(run_dir: Path, enabled: bool):
    """A SummaryWriter in RUN_DIR/tensorboard when asked for and installed, else None."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install 'unetkit[tensorboard]'): skipped")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_history(run_dir: Path, history: list[dict], writer=None, plot: bool = True) -> None:
    """Rewrite history.csv and (with ``plot``) curves.png, atomically, and log the last row to
    TensorBoard."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    write_csv(
        run_dir / "history.csv", ({k: _fmt(row.get(k)) for k in keys} for row in history), keys
    )
    if plot:
        shown = ("lr", "elapsed_min", "images_per_s")
        plots.plot_curves(
            [{k: v for k, v in r.items() if k not in shown} for r in history],
            run_dir / "curves.png",
        )
    if writer is not None and history:
        row = history[-1]
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# the numbers people watch: each epoch's log line, in this order (history.csv has them too)
WATCHED = (
    "train_loss",
    "val_loss",
    "mean_iou",
    "mean_dice",
    "pixel_accuracy",
    "images_per_s",
    "lr",
)


def format_row(row: dict) -> str:
    """One log line per epoch: the numbers people watch (``WATCHED``)."""
    parts = [f"epoch {row['epoch']}"]
    for key in WATCHED:
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4g}")
    return "  ".join(parts)


def display_image(tensor, cfg: DataConfig) -> np.ndarray:
    """A normalised (C, H, W) tensor back to an (H, W, C) float image in [0, 1]."""
    image = tensor.float().cpu().numpy().transpose(1, 2, 0)
    if cfg.normalize in ("image", "percentile"):  # per-image statistics: stretch for display
        lo, hi = np.percentile(image, (0.5, 99.5), axis=(0, 1))
        return np.clip((image - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return np.clip(image * std + mean, 0, 1)


def panel_row(item: dict, pred: np.ndarray, info, cfg: DataConfig) -> np.ndarray:
    """image | ground truth | prediction | overlay for one validation image."""
    image = display_image(item["image"], cfg)
    mask = item["mask"].numpy()
    ign = info.ignore_index
    return viz.panel(
        [
            image,
            viz.colorize(mask, info.palette, ign),
            viz.colorize(pred, info.palette, ign),
            viz.overlay(image, pred, info.palette, class_names=None, legend=False),
        ],
        [str(item.get("stem", "")), "ground truth", "prediction", "overlay"],
    )


def write_panels(path: Path, rows: list[np.ndarray]) -> None:
    """Stack panel rows (padded to the widest) into one PNG."""
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    viz.save_png(path, np.concatenate(padded, axis=0))
