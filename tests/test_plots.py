"""Charts (``unetkit.plots``): written as PNGs without touching matplotlib's backend, curves
that keep every kind of number on its own axis, and the learning curve as drawn."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from unetkit.plots import confusion_png, plot_curves, plot_learning_curve
from unetkit.viz import save_png


def test_figures_are_pngs_without_backend_change(tmp_path):
    backend = matplotlib.get_backend()
    history = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_mean_iou": 0.3},
        {"epoch": 2, "train_loss": 0.6, "val_loss": 0.9, "val_mean_iou": 0.5},
    ]
    plot_curves(history, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size == (1000, 400)
    confusion_png(np.array([[8, 2], [0, 5]]), ["bg", "fg"], tmp_path / "cm.png")
    assert Image.open(tmp_path / "cm.png").format == "PNG"
    assert matplotlib.get_backend() == backend
    save_png(tmp_path / "x.png", np.zeros((3, 4, 3), np.uint8))
    assert Image.open(tmp_path / "x.png").size == (4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png", "x.png"]


def test_curves_never_plot_counts_and_keep_metrics_on_their_own_axes(tmp_path):
    """The pixel count (~1e6) on the metrics' axis flattened every metric to a line at 0."""
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "mean_iou": 0.5 + e / 10,
         "pixel_accuracy": 0.9, "pixels": 3744488, "iou_background": 0.9, "iou_cell": 0.2 * e,
         "images_per_s": 19.0}
        for e in (1, 2, 3)
    ]  # fmt: skip
    panels = plot_curves(history, tmp_path / "curves.png")
    assert panels == {
        "loss": ["train_loss", "val_loss"],
        "metrics": ["mean_iou", "pixel_accuracy"],
        "IoU per class": ["iou_background", "iou_cell"],
    }
    assert Image.open(tmp_path / "curves.png").size == (1500, 400)


RED = np.array([214, 39, 40])  # tab:red, the baseline's dashed line


def _baseline_row(png) -> int:
    """The row with the most red pixels: the dashed line across the axes, not the legend."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (np.abs(rgb - RED).sum(axis=2) < 60).sum(axis=1)
    assert red.max() > 100  # a line across most of the 600 px wide picture
    return int(np.argmax(red))


def test_learning_curve_draws_runs_mean_and_baseline(tmp_path):
    runs = {2: [0.61, 0.65], 4: [0.74], 8: [0.8, 0.82]}
    plot_learning_curve(runs, 0.7, tmp_path / "lc.png", title="t", ylabel="Dice")
    assert Image.open(tmp_path / "lc.png").size == (600, 400)
    # a baseline above the curve draws its line higher up the picture than one below it
    plot_learning_curve(runs, 0.63, tmp_path / "low.png", title="t", ylabel="Dice")
    plot_learning_curve(runs, 0.8, tmp_path / "high.png", title="t", ylabel="Dice")
    assert _baseline_row(tmp_path / "high.png") < _baseline_row(tmp_path / "low.png") - 50
    with pytest.raises(ValueError, match="at least one run per size"):
        plot_learning_curve({2: []}, 0.5, tmp_path / "bad.png", title="t", ylabel="Dice")
    assert not (tmp_path / "bad.png").exists()
