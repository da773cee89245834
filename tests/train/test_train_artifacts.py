"""train/artifacts.py: what a run leaves besides its checkpoints: history.csv, the epoch's log
line, the validation panels."""

from __future__ import annotations

import csv

import numpy as np
import torch
from PIL import Image

from unetkit.config import DataConfig
from unetkit.train import artifacts


def test_format_row_shows_the_numbers_people_watch():
    row = {"epoch": 3, "train_loss": 0.123456, "val_loss": None, "mean_iou": 0.5,
           "lr": 0.002, "elapsed_min": 1.5}  # fmt: skip
    assert artifacts.format_row(row) == "epoch 3  train_loss 0.1235  mean_iou 0.5  lr 0.002"


def test_history_csv_holds_every_key_of_every_row(tmp_path):
    history = [{"epoch": 1, "train_loss": 0.5, "lr": 0.001},
               {"epoch": 2, "train_loss": 1 / 3, "mean_iou": 0.25, "note": None}]  # fmt: skip
    artifacts.write_history(tmp_path, history, plot=False)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert list(rows[0]) == ["epoch", "train_loss", "lr", "mean_iou", "note"]
    assert rows[0] == {"epoch": "1", "train_loss": "0.5", "lr": "0.001", "mean_iou": "",
                       "note": ""}  # fmt: skip
    assert rows[1]["train_loss"] == "0.333333"  # six significant digits
    assert not (tmp_path / "curves.png").exists()  # plot=False: the csv alone
    assert not list(tmp_path.glob(".*"))  # written through a temporary file, renamed


def test_display_image_undoes_the_normalisation():
    data = DataConfig(normalize="dataset", mean=(0.5,), std=(0.25,))
    tensor = torch.tensor([[[-2.0, 0.0], [1.0, 4.0]]])  # (1, 2, 2), normalised
    shown = artifacts.display_image(tensor, data)
    assert shown.shape == (2, 2, 1)
    assert shown[..., 0].tolist() == [[0.0, 0.5], [0.75, 1.0]]  # clipped to [0, 1]
    per_image = artifacts.display_image(torch.arange(100.0).reshape(1, 10, 10),
                                        data.replace(normalize="image"))  # fmt: skip
    assert per_image.min() == 0.0 and per_image.max() == 1.0  # stretched for display


def test_panels_are_padded_to_the_widest_row(tmp_path):
    rows = [np.zeros((5, 8, 3), np.uint8), np.zeros((3, 4, 3), np.uint8)]
    artifacts.write_panels(tmp_path / "panels" / "epoch_0001.png", rows)
    image = np.asarray(Image.open(tmp_path / "panels" / "epoch_0001.png"))
    assert image.shape == (5 + 4 + 3 + 4, 8, 3)  # each row and a 4 px white gap below it
    assert (image[5:9] == 255).all() and (image[9:12, 4:] == 255).all()
    assert (image[9:12, :4] == 0).all()


def test_no_tensorboard_writer_unless_asked(tmp_path):
    assert artifacts.tensorboard_writer(tmp_path, False) is None
    assert not (tmp_path / "tensorboard").exists()
