"""`unetkit demo` end to end with a small budget: every artefact, and better than chance."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from unetkit.cli import main


def test_demo_writes_everything_and_learns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "-o",
                str(out),
                "--budget",
                "300",
                "--epochs",
                "4",
                "--images",
                "12",
                "--large",
                "300x420",
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "held-out mean IoU" in summary and str(out / "report.html") in summary
    for rel in (
        "report.html",
        "metrics.json",
        "dataset/dataset.json",
        "dataset/classes.txt",
        "run/best.pt",
        "run/last.pt",
        "run/history.csv",
        "run/curves.png",
        "evaluation/metrics.json",
        "evaluation/confusion.png",
        "evaluation/per_image.csv",
        "predictions/summary.csv",
        "predictions/large.png",
        "predictions/large_overlay.png",
    ):
        assert (out / rel).is_file(), rel
    assert list((out / "run" / "panels").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads((out / "evaluation" / "metrics.json").read_text())
    # three classes: a constant or random guess scores a mean IoU far below this
    assert metrics["mean_iou"] > 0.5
    assert metrics["pixel_accuracy"] > 0.7
    large = np.asarray(Image.open(out / "large" / "large.png"))
    mask = np.asarray(Image.open(out / "predictions" / "large.png"))
    assert mask.shape == large.shape[:2]
    assert set(np.unique(mask)) <= {0, 1, 2} and len(np.unique(mask)) == 3
    page = (out / "report.html").read_text()
    for src in ("run/curves.png", "evaluation/confusion.png", "predictions/large_overlay.png"):
        assert f'src="{src}"' in page and (out / src).is_file()
    # a second run into the same folder is refused rather than mixed with the first
    assert main(["demo", "-o", str(out), "--budget", "5"]) == 2
