"""Charts for people, drawn with matplotlib on their own Agg canvas and written atomically:
training curves, confusion matrices, learning curves."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from .files import atomic_path


def _save_figure(fig, path: str | os.PathLike) -> None:  # noqa: ANN001 - matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # Agg canvas for this figure only: no global backend switch
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_curves(
    history: Sequence[dict[str, float]], path: str | os.PathLike
) -> dict[str, list[str]]:
    """Training curves vs epoch, one panel per kind of number, so none flattens another:
    losses (keys containing "loss"), summary metrics in [0, 1] (mean IoU, Dice, accuracy, ...)
    and per-class IoU (``iou_*``) on their own [0, 1] axes. Counts (``pixels``) and anything
    else outside [0, 1] are never plotted.

    Args:
        history: one dict per epoch, e.g. ``{"epoch": 1, "train_loss": 0.5, "mean_iou": 0.7}``.
        path: output PNG (written atomically).

    Returns:
        panel title -> the keys plotted in it.
    """
    from matplotlib.figure import Figure

    def numeric(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    keys = sorted({k for row in history for k, v in row.items() if k != "epoch" and numeric(v)})
    losses = [k for k in keys if "loss" in k]
    unit = [
        k
        for k in keys
        if k not in losses
        and k != "pixels"
        and all(0.0 <= r[k] <= 1.0 for r in history if numeric(r.get(k)))
    ]
    panels = {
        "loss": losses,
        "metrics": [k for k in unit if not k.startswith("iou_")],
        "IoU per class": [k for k in unit if k.startswith("iou_")],
    }
    panels = {title: group for title, group in panels.items() if group} or {"loss": []}
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, group) in zip(axes, panels.items()):
        for key in group:
            pts = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(history)
                   if numeric(r.get(key))]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=key.removeprefix("iou_"))
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        if title != "loss":
            ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    return panels


def confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix heat-map (rows: truth, columns: prediction).

    Args:
        matrix: (K, K) int counts, ``matrix[t, p]`` = pixels of true class t predicted as p.
        class_names: K names.
        path: output PNG (written atomically).
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=np.float64)
    k = matrix.shape[0]
    if matrix.shape != (k, k) or len(class_names) != k:
        raise ValueError(f"confusion matrix {matrix.shape} vs {len(class_names)} class names")
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    side = 2.5 + 0.6 * k
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for t in range(k):
        for p in range(k):
            colour = "white" if norm[t, p] > 0.5 else "black"
            ax.text(p, t, f"{norm[t, p]:.2f}", ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_learning_curve(
    runs: Mapping[int, Sequence[float]],
    baseline: float,
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    baseline_label: str = "Otsu (no learning)",
    label: str = "mean over runs",
    groups: Mapping[str, Mapping[int, Sequence[float]]] | None = None,
) -> None:
    """A score against the number of annotated images: every run a dot, their mean a line,
    the no-learning ``baseline`` a dashed line, ``groups`` (name -> size -> runs) thin lines
    of their means; log2 x axis ticked at the sizes.

    Args:
        runs: training images -> the score of each run with that many.
        baseline: the score of a method that learns nothing (e.g. Otsu's threshold).
        path: output PNG (written atomically).

    Raises:
        ValueError: no sizes, or a size without a run.
    """
    from matplotlib.figure import Figure

    sizes = sorted(runs)
    if not sizes or not all(runs[n] for n in sizes):
        raise ValueError(f"a learning curve needs at least one run per size; got {dict(runs)}")
    means = [statistics.fmean(runs[n]) for n in sizes]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, by_size in sorted((groups or {}).items()):
        xs = [n for n in sizes if by_size.get(n)]
        ax.plot(xs, [statistics.fmean(by_size[n]) for n in xs], lw=0.8, alpha=0.45, label=name)
    for n in sizes:
        ax.scatter([n] * len(runs[n]), runs[n], s=14, color="black", alpha=0.5, zorder=3)
    ax.plot(sizes, means, "o-", color="black", lw=2, label=label)
    ax.axhline(baseline, ls="--", color="tab:red", label=f"{baseline_label} {baseline:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("annotated training images")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2 if groups else 1)
    fig.tight_layout()
    _save_figure(fig, path)
