"""train/validate.py: validation through the Predictor, whole images, the rays thresholds."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from training import TINY, make_instance_dataset, said_by_train, tiny_config

import unetkit
from unetkit import load_checkpoint
from unetkit.cli import main
from unetkit.config import DataConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_validation_reports_what_evaluate_reports(dataset, tmp_path):
    """Issue 10.5: best.pt is chosen on the metric ``evaluate`` reports, by the same path
    (Predictor defaults: the 40 px images are tiled at the 32 px training size)."""
    from unetkit import PredictConfig
    from unetkit.infer import evaluate_model

    run = tmp_path / "run"
    unetkit.fit(tiny_config(dataset, run, epochs=2, val_stems=("03", "04", "05")))
    row = list(csv.DictReader((run / "history.csv").open()))[-1]
    cfg = PredictConfig(precision="fp32", device="cpu")
    metrics = evaluate_model(run / "last.pt", dataset, tmp_path / "r", config=cfg, progress=False)
    assert metrics["stems"] == ["03", "04", "05"]
    for key in ("mean_iou", "mean_dice", "pixel_accuracy"):
        assert float(row[key]) == pytest.approx(metrics[key], abs=2e-6), key  # csv: 6 digits


def test_resized_training_validates_whole_images_with_panels(dataset, tmp_path):
    """A model trained on resized images is validated at the images' own size (as predict
    does it); the panels show the whole image (they crashed on a size mismatch)."""
    run = tmp_path / "run"
    cfg = tiny_config(
        dataset, run, epochs=1, panels=1, data=DataConfig(resize="resize", size=(32, 32))
    )
    unetkit.fit(cfg)
    assert (run / "panels" / "epoch_0001.png").is_file()


def test_rays_thresholds_are_chosen_in_the_held_out_bands_of_a_small_set(tmp_path):
    """A small set holds no image out whole: the rays head's thresholds are chosen on each
    image's validation band, and the run says so."""
    from unetkit.objects.thresholds import PROB_GRID

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    with said_by_train() as said:
        code = main(["train", str(data), "-o", str(run), "--task", "instance", "--instance-head",
                     "rays", "--n-rays", "8", "--epochs", "1", "--steps-per-epoch", "2",
                     *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    bands = ckpt.train_state["data"]["val_regions"]
    assert bands and not ckpt.train_state["data"]["val"]
    chosen = [m for m in said if "prob_thresh" in m and "validation bands" in m]
    assert len(chosen) == 1 and f" {len(bands)} validation bands" in chosen[0]
    assert ckpt.extra["objects"]["prob_thresh"] in PROB_GRID
