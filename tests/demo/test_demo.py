"""`unetkit demo` end to end with a small budget: every artefact, and better than chance."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from unetkit.cli import main
from unetkit.errors import UnetkitError


def test_demo_writes_everything_and_learns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "-o",
                str(out),
                "--time-budget",
                "5",
                "--images",
                "12",
                "--large",
                "300x420",
                "--curve",
                "3",
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
    # the cells are counted: object outputs, object metrics against instances/, report section
    val = json.loads((out / "dataset" / "dataset.json").read_text())["split"]["val"]
    for suffix in ("_objects.csv", "_objects.png", "_instances.png"):
        assert (out / "predictions" / f"{val[0]}{suffix}").is_file(), suffix
    objects = metrics["objects"]
    assert objects["n_true"] > 0 and objects["ap_50"] > 0.3
    # counts within a factor of two of the true objects (a learnt model, not a blank mask)
    assert 0.5 * objects["n_true"] <= objects["n_pred"] <= 2 * objects["n_true"]
    assert "objects:" in summary and "AP@0.5" in summary
    assert "<h2>Objects</h2>" in page and f'src="predictions/{val[0]}_objects.png"' in page
    rows = (out / "predictions" / f"{val[0]}_objects.csv").read_text().splitlines()
    assert rows[0].startswith("id,class,score,area_px") and len(rows) >= 2
    assert f"{len(rows) - 1} objects" in page
    # per-image table worst first, with thumbnails; fingerprint, config and links to artefacts
    assert "Per image (worst first)" in page and "Data fingerprint" in page
    table = page[page.index("Per image (worst first)") :]
    shown = [n for n in (f"{s}.png" for s in val) if n in table]
    per_image = (out / "evaluation" / "per_image.csv").read_text().splitlines()[1:]
    ious = {line.split(",")[0]: float(line.split(",")[3]) for line in per_image}
    order = sorted(shown, key=lambda n: table.index(f"<br>{n}"))
    assert [ious[n] for n in order] == sorted(ious[n] for n in order)
    for href in ("run/history.csv", "evaluation/per_image.csv", "predictions/summary.csv"):
        assert f'href="{href}"' in page
    # the learning curve: one subset run of 3 images, the demo's own run, Otsu; in the report
    with (out / "curve" / "learning_curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    split = json.loads((out / "dataset" / "dataset.json").read_text())["split"]
    assert [r["images"] for r in curve] == ["3", str(len(split["train"])), "otsu"]
    assert [r["run"] for r in curve[:2]] == ["curve/003_images/run", "run"]
    assert (out / "curve" / "003_images" / "run" / "best.pt").is_file()
    subset = json.loads((out / "curve" / "003_images" / "dataset" / "dataset.json").read_text())
    assert subset["n_images"] == 3 and subset["classes"] == ["background", "cell", "nucleus"]
    # the demo's own model finds the foreground (foreground Dice pools every class but 0)
    assert float(curve[1]["foreground_dice"]) > 0.7
    assert 0.7 < float(curve[1]["predicted_to_true"]) < 1.3
    assert "How many images to annotate" in page
    assert 'src="curve/learning_curve.png"' in page and "Otsu (no learning)" in page
    assert "learning curve (foreground Dice): 3 images" in summary
    # a second run into the same folder is refused rather than mixed with the first
    assert main(["demo", "-o", str(out), "--time-budget", "0.1"]) == 2


def test_demo_flags_reach_the_run(tmp_path, monkeypatch):
    """Every demo flag is passed on (--epochs used to be accepted and dropped)."""
    import unetkit.demo

    seen = {}

    def fake_run_demo(out, **kwargs):
        seen.update(kwargs, out=out)
        raise UnetkitError("stopped here")

    monkeypatch.setattr(unetkit.demo, "run_demo", fake_run_demo)
    assert main(["demo", "-o", str(tmp_path / "d"), "--epochs", "3", "--images", "9",
                 "--time-budget", "0.5", "--large", "100x120", "--seed", "4",
                 "--curve", "4,2"]) == 2  # fmt: skip
    assert seen["epochs"] == 3 and seen["n_images"] == 9 and seen["budget_s"] == 30
    assert seen["large"] == (100, 120) and seen["seed"] == 4 and seen["overwrite"] is False
    assert seen["curve_sizes"] == (2, 4)
    assert main(["demo", "-o", str(tmp_path / "e"), "--curve", ""]) == 2
    assert seen["curve_sizes"] == ()


def test_demo_refuses_a_bad_curve_in_one_line(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--curve", "2,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--curve" in err[0] and "'x'" in err[0]
    assert not (tmp_path / "d").exists()
