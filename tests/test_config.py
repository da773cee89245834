"""Typed configuration: strict dicts, round trips, validation with values in the message."""

from __future__ import annotations

import json

import pytest

from unetkit import AugmentConfig, DataConfig, PredictConfig, TrainConfig, preset_config
from unetkit.config import parse_size


def test_train_config_round_trips_through_json():
    cfg = TrainConfig(dataset="d", run_dir="r", model=preset_config("paper", base_width=8),
                      data=DataConfig(channels=1, size=(252, 252)), val_stems=("24", "25"),
                      class_weights=(1.0, 3.0))  # fmt: skip
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.data.size == (252, 252) and back.val_stems == ("24", "25")
    assert back.model.padding == "valid"


def test_unknown_keys_are_listed_with_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown TrainConfig key\(s\) epoch; valid keys: .*epochs"
    ):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="unknown DataConfig key"):
        TrainConfig.from_dict({"data": {"colour": 1}})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(epochs=0), "epochs must be >= 1; got 0"),
        (lambda: TrainConfig(task="segment"), "task must be one of auto, multiclass"),
        (lambda: TrainConfig(val_fraction=1.5), r"val_fraction must be in \[0, 1\); got 1.5"),
        (lambda: DataConfig(resize="crop"), "resize must be one of letterbox"),
        (lambda: DataConfig(size=(0, 4)), r"size must be \(height, width\) > 0"),
    ],
)
def test_invalid_values_name_the_field_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_no_augmentation_turns_everything_off():
    off = AugmentConfig.none()
    assert not off.flip and not off.rot90
    assert off.affine == off.elastic == off.brightness == off.noise == off.blur == 0.0
    assert AugmentConfig().elastic > 0  # the paper's elastic deformation is on by default


def test_parse_size():
    assert parse_size("512") == (512, 512)
    assert parse_size("512x384") == (512, 384)
    for bad in ("0", "12x", "axb", "1x2x3"):
        with pytest.raises(ValueError, match="--tile must be N or HxW"):
            parse_size(bad, "--tile")


def test_pretty_is_the_json_of_the_config():
    cfg = PredictConfig(tile=(256, 256))
    assert json.loads(cfg.pretty()) == cfg.to_dict()
    assert PredictConfig.from_dict(cfg.to_dict()) == cfg
