"""The model card: one description of a model for checkpoints, exports and predictors."""

from __future__ import annotations

import json

import pytest

from unetkit import DataConfig, UnetkitError
from unetkit.card import ModelCard


@pytest.fixture
def checkpoint(tiny_model, tiny_checkpoint):
    state = {
        "fingerprint": {"images": 2, "channels": 1},
        "data": {"classes": ["bg", "a", "b"], "train": ["01", "02"], "val": ["03"]},
    }
    return tiny_checkpoint(
        tiny_model(None, in_channels=1, out_channels=3),  # the ModelConfig defaults
        classes=["bg", "a", "b"],
        palette=[[0, 0, 0], [200, 0, 0], [0, 0, 200]],
        preprocessing=DataConfig(channels=1, size=(32, 32), normalize="image"),
        task="instance",
        preset="small",
        train_state=state,
        extra={"objects": {"boundary_width": 2, "min_size": 5}},
    )


def test_checkpoint_card_holds_every_field(checkpoint):
    card = checkpoint.card
    assert card.classes == ["bg", "a", "b"] and card.task == "instance"
    assert card.split == {"train": ["01", "02"], "val": ["03"]}
    assert card.fingerprint == {"images": 2, "channels": 1}
    assert card.objects == {"boundary_width": 2, "min_size": 5}
    assert card.preprocessing.normalize == "image" and card.model_config.base_width == 4


def test_round_trips_through_dict_and_metadata(checkpoint):
    card = checkpoint.card
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())), "x")
    assert again.to_dict() == card.to_dict() and again.source == "x"
    props = {f"unetkit.{k}": v for k, v in card.to_metadata().items()}
    from_props = ModelCard.from_metadata(props, "m.onnx", prefix="unetkit.")
    assert from_props.to_dict() == card.to_dict()
    assert all(isinstance(v, str) for v in card.to_metadata().values())


def test_older_exports_without_optional_keys_still_read(checkpoint):
    card = checkpoint.card.to_dict()
    old = {k: card[k] for k in ("classes", "palette", "preprocessing", "model_config")}
    read = ModelCard.from_dict(old)
    assert read.task == "multiclass" and read.split is None and read.objects is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("classes"), "no unetkit metadata (classes missing)"),
        (lambda d: d.update(palette=[["red"]]), "malformed unetkit metadata"),
        (lambda d: d.update(model_config={"no_such_field": 1}), "malformed unetkit metadata"),
        (  # a stored value of the wrong type, named by its key (it used to be taken as it was)
            lambda d: d["model_config"].update(depth="3"),
            "malformed unetkit metadata (depth: expected int; got '3')",
        ),
    ],
)
def test_bad_cards_are_one_line_naming_the_file(checkpoint, change, message):
    data = checkpoint.card.to_dict()
    change(data)
    with pytest.raises(UnetkitError, match=r"^m\.onnx: ") as info:
        ModelCard.from_dict(data, "m.onnx")
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UnetkitError, match="malformed"):
        ModelCard.from_metadata({"classes": "[not json"}, "m.onnx")
