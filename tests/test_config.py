"""Typed configuration: strict dicts, round trips, validation with values in the message."""

from __future__ import annotations

import json

import pytest

from unetkit import AugmentConfig, DataConfig, PredictConfig, TrainConfig, preset_config
from unetkit.config import ObjectConfig, parse_size


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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, "lr must be > 0; got -1.0"),
        ({"lr": float("nan")}, "lr must be > 0; got nan"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0; got -0.1"),
        ({"time_budget": -1.0}, "time_budget must be >= 0; got -1.0"),
        ({"clip_grad": -1.0}, "clip_grad must be >= 0; got -1.0"),
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\); got 1.5"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be >= 0; got -1.0"),
        ({"steps_per_epoch": -1}, "steps_per_epoch must be >= 0; got -1"),
        ({"early_stop": -1}, "early_stop must be >= 0; got -1"),
        ({"workers": -2}, "workers must be >= -1; got -2"),
        ({"optimizer": "adamx"}, "optimizer must be one of adam, adamw, sgd, rmsprop; got 'adamx'"),
        ({"schedule": "step"}, "schedule must be one of constant, cosine, poly, plateau"),
        ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16, fp16; got 'fp8'"),
        ({"class_weights": "even"}, "class_weights must be 'balanced' or numbers >= 0"),
        ({"class_weights": (1.0, -2.0)}, "class_weights must be 'balanced' or numbers >= 0"),
        ({"weight_map_objects": "cells"}, "weight_map_objects must be 'foreground' or a class"),
    ],
)
def test_train_config_rejects_bad_numbers_and_names(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
    with pytest.raises(ValueError, match=message):  # from a JSON config file, too
        TrainConfig.from_dict(changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "tiles"}, "strategy must be one of auto, full, letterbox, resize, tile"),
        ({"blend": "linear"}, "blend must be one of gaussian, constant; got 'linear'"),
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\); got 1.0"),
        ({"overlap": -0.1}, r"overlap must be in \[0, 1\); got -0.1"),
        ({"batch_size": -1}, "batch_size must be >= 0; got -1"),
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\]; got 1.5"),
        ({"precision": "half"}, "precision must be one of auto, fp32, bf16, fp16; got 'half'"),
        ({"tile": (0, 64)}, r"tile must be \(height, width\) >= 1; got \(0, 64\)"),
        ({"min_area": -1}, "min_area must be >= 0; got -1"),
    ],
)
def test_predict_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        PredictConfig(**changes)


def test_good_values_still_pass():
    TrainConfig(lr=1e-5, weight_decay=0.0, clip_grad=1.0, momentum=0.99, optimizer="sgd",
                class_weights=(1.0, 3.0), weight_map_objects="0", precision="bf16")  # fmt: skip
    TrainConfig(class_weights="balanced", time_budget=5.0, schedule="plateau")
    PredictConfig(strategy="tile", tile=(64, 48), overlap=0.0, blend="constant", threshold=1.0)


def test_apply_overrides_sets_dotted_fields_of_the_right_type():
    from unetkit.config import ModelConfig, apply_overrides

    cfg = TrainConfig(model=ModelConfig())
    new = apply_overrides(
        cfg, {"lr": 1, "data.size": [96, 128], "model.depth": 3, "val_stems": ["a", "b"]}
    )
    assert new.lr == 1.0 and isinstance(new.lr, float)
    assert new.data.size == (96, 128) and new.model.depth == 3 and new.val_stems == ("a", "b")
    assert new.data.resize == cfg.data.resize and new.model.base_width == 64  # others kept
    assert cfg.lr == TrainConfig.lr and cfg.data.size == (0, 0)  # the original is unchanged
    # a nested config as a whole, from a dict or an instance, then one of its fields
    new = apply_overrides(TrainConfig(), {"model": {"depth": 2}, "model.base_width": 8})
    assert (new.model.depth, new.model.base_width) == (2, 8)
    assert apply_overrides(TrainConfig(), {"class_weights": "balanced"}).class_weights == "balanced"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"epoch": 3},
            r"unknown key epoch: TrainConfig has no field 'epoch'; valid keys: .*epochs",
        ),
        ({"data.colour": 1}, "unknown key data.colour: DataConfig has no field 'colour'"),
        ({"lr": "fast"}, r"^lr: expected float; got 'fast'$"),
        ({"epochs": True}, r"^epochs: expected int \| None; got True$"),
        ({"batch_size": 2.5}, r"^batch_size: expected int; got 2.5$"),
        ({"data.size": (64,)}, r"^data.size: expected tuple\[int, int\]; got \(64,\)$"),
        ({"model": {}, "model.depth": "3"}, r"^model.depth: expected int; got '3'$"),
        ({"class_weights": 3}, r"^class_weights: expected tuple\[float, \.\.\.\] \| str \| None"),
        ({"lr.x": 1}, r"^lr.x: lr is a float, not a config$"),
        ({"model.depth": 3}, r"^model.depth: model is None \(set it first\), not a config$"),
    ],
)
def test_apply_overrides_rejects_unknown_keys_and_wrong_types(overrides, message):
    from unetkit.config import apply_overrides

    with pytest.raises(ValueError, match=message) as info:
        apply_overrides(TrainConfig(), overrides)
    assert "\n" not in str(info.value)


def test_apply_overrides_validates_the_result():
    from unetkit.config import ModelConfig, apply_overrides

    with pytest.raises(ValueError, match="lr must be > 0; got -1.0"):
        apply_overrides(TrainConfig(), {"lr": -1})
    with pytest.raises(ValueError, match="resize must be one of letterbox"):
        apply_overrides(TrainConfig(), {"data.resize": "crop"})
    with pytest.raises(ValueError, match="widths needs depth"):  # checked with the new depth
        apply_overrides(TrainConfig(model=ModelConfig(widths=(4, 8, 16))), {"model.depth": 3})
    assert apply_overrides(TrainConfig(), {}) == TrainConfig()


# One check of values for from_dict (JSON configs, checkpoints) and apply_overrides (options):
# before they shared it, from_dict took these values as they were (or failed later, unnamed).
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": True}, r"^epochs: expected int \| None; got True$"),
        ({"batch_size": 2.5}, r"^batch_size: expected int; got 2.5$"),
        ({"lr": "fast"}, r"^lr: expected float; got 'fast'$"),
        ({"weight_map_objects": 0}, r"^weight_map_objects: expected str; got 0$"),
        ({"classes": "abc"}, r"^classes: expected tuple\[str, \.\.\.\] \| None; got 'abc'$"),
        ({"val_stems": [24, 25]}, r"^val_stems: expected tuple\[str, \.\.\.\] \| None; got \["),
        ({"data": 5}, r"^data: expected DataConfig; got 5$"),
        ({"data": {"size": [64]}}, r"^data.size: expected tuple\[int, int\]; got \[64\]$"),
        ({"model": {"depth": "3"}}, r"^model.depth: expected int; got '3'$"),
        ({"model": {"depth": 1, "widths": [4.0, 8.0]}}, r"^model.widths: expected tuple\[int"),
        ({"objects": {"fill_holes": 1}}, r"^objects.fill_holes: expected bool; got 1$"),
    ],
)
def test_from_dict_checks_types_as_apply_overrides_does(data, message):
    from unetkit.config import apply_overrides

    with pytest.raises(ValueError, match=message) as read:
        TrainConfig.from_dict(data)
    with pytest.raises(ValueError, match=message) as given:
        apply_overrides(TrainConfig(), data)
    assert str(read.value) == str(given.value)


def test_from_dict_needs_a_dict():
    with pytest.raises(ValueError, match=r"^TrainConfig: expected a dict; got a list$"):
        TrainConfig.from_dict([1])  # type: ignore[arg-type]


def test_numpy_numbers_become_python_numbers():
    import numpy as np

    from unetkit.config import apply_overrides

    cfg = apply_overrides(TrainConfig(), {"batch_size": np.int64(3), "lr": np.float32(0.5)})
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and cfg.lr == 0.5
    model = preset_config("small", in_channels=np.int64(3))
    assert type(model.in_channels) is int and json.dumps(model.to_dict())
    with pytest.raises(ValueError, match=r"^batch_size: expected int; got np.float64\(3.0\)$"):
        apply_overrides(TrainConfig(), {"batch_size": np.float64(3.0)})


@pytest.mark.parametrize(
    "cfg",
    [
        preset_config("paper", widths=(8, 16, 32, 64, 128), norm="group", dropout=0.5),
        DataConfig(channels=3, size=(64, 48), mean=(0.5, 0.4, 0.3), std=(2, 2, 2)),
        AugmentConfig.none().replace(scale=(1, 2)),
        ObjectConfig(head="rays", ray_scale=2.5, min_size=3, fill_holes=False),
        PredictConfig(tile=(64, 48), fill_holes=False, min_size=4, objects_between="1"),
        TrainConfig(time_budget=10, class_weights=(1, 2.5), weight_map=False, epochs=3),
    ],
    ids=lambda cfg: type(cfg).__name__,
)
def test_every_config_round_trips_through_json(cfg):
    """What checkpoints and run folders store reads back equal (ints given for floats too)."""
    back = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.to_dict() == cfg.to_dict()
