"""train/plan.py: where each default of a run comes from. The dataset (task, loss, classes,
the weight map), the split (``--val-stems``, the dataset's, stratified, or held-out bands of a
small set), and the recipe (patch, width and batch from the fingerprint and the device), the
epoch length of a small set."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from training import TINY, assert_bitwise_equal, make_instance_dataset, tiny_config

import unetkit
from conftest import make_mixed_images
from unetkit import TrainConfig, load_checkpoint
from unetkit.cli import main
from unetkit.config import DataConfig
from unetkit.data.layout import describe_dataset
from unetkit.data.split import image_kind
from unetkit.models.presets import preset_config
from unetkit.models.unet import UNet
from unetkit.train import plan as plan_module
from unetkit.train.plan import (
    augment_gamma,
    describe_split,
    is_regression,
    normalization,
    recipe,
    resolve_config,
    split_stems,
    validation_regions,
)

# -- the recipe -----------------------------------------------------------------------------
CPU = torch.device("cpu")


def _cfg(model=None, **kw) -> TrainConfig:
    model = model or preset_config("auto", in_channels=3, out_channels=2)
    return TrainConfig(dataset="d", run_dir="r", model=model, **kw)


def test_cpu_rule_patch_width_batch():
    cfg, reason = recipe(_cfg(), {"size_median": [520, 696]}, CPU, width_auto=True)
    assert cfg.data.size == (256, 256)  # capped at 256 on a CPU
    assert cfg.model.base_width == 16 and cfg.batch_size == 4
    assert "patch 256x256" in reason and "width 16" in reason and "batch 4" in reason


def test_small_images_are_not_upsampled_and_sizes_pool_cleanly():
    cfg, _ = recipe(_cfg(), {"size_median": [100, 200]}, CPU, width_auto=True)
    assert cfg.data.size == (96, 192)  # multiples of 2**4, never above the median
    cfg, _ = recipe(_cfg(), {"size_median": [20, 30]}, CPU, width_auto=True)
    assert cfg.data.size == (64, 64)  # at least 4 x 2**depth (padded, not upsampled)


def test_valid_padding_model_gets_a_legal_patch():
    paper = preset_config("paper", in_channels=1, out_channels=2, base_width=4)
    cfg, _ = recipe(_cfg(paper), {"size_median": [512, 512]}, CPU, width_auto=False)
    assert cfg.data.size == (252, 252)  # the largest legal input <= 256
    with torch.device("meta"):
        UNet(cfg.model).check_input(cfg.data.size)
    assert cfg.model.base_width == 4  # an explicit model keeps its width


def test_what_is_given_is_kept():
    given = _cfg(data=DataConfig(size=(128, 160)), batch_size=7)
    cfg, reason = recipe(given, {"size_median": [512, 512]}, CPU, width_auto=False)
    assert cfg.data.size == (128, 160) and cfg.batch_size == 7
    assert reason == "recipe: as configured"


@pytest.mark.parametrize(
    ("memory_gib", "median", "width", "size", "batch"),
    [
        (80, [1024, 1024], 32, (512, 512), 4),  # 16 * (256/512)**2
        (80, [256, 256], 32, (256, 256), 16),
        (4, [256, 256], 16, (256, 256), 32),  # a small GPU: the CPU width, more crops
        (80, [64, 64], 32, (64, 64), 64),  # capped at 64
    ],
)
def test_gpu_rule(memory_gib, median, width, size, batch):
    with mock.patch.object(plan_module, "_gpu_memory", return_value=memory_gib * 2**30):
        cfg, _ = recipe(_cfg(), {"size_median": median}, torch.device("cuda"), width_auto=True)
    assert cfg.model.base_width == width and cfg.data.size == size and cfg.batch_size == batch


# -- what is decided without the data ------------------------------------------------------
def test_an_image_to_image_run_is_decided_in_one_place():
    assert is_regression(TrainConfig(task="regression"))
    assert is_regression(TrainConfig(preset="restore")) and is_regression(TrainConfig(preset="x3"))
    assert not is_regression(TrainConfig(preset="x3", task="multiclass"))  # the task given wins
    assert not is_regression(TrainConfig())


def test_the_normalisation_is_chosen_from_the_fingerprint_and_says_why():
    even = {"exposure_spread": 0.1, "contrast_spread": 0.2,
            "pooled": {"mean": [0.4], "std": [0.0001]}}  # fmt: skip
    data, why = normalization(TrainConfig(task="multiclass"), even)
    assert (data.normalize, data.mean, data.std) == ("dataset", (0.4,), (1e-3,))  # std floored
    assert why.startswith("normalize dataset: exposure is even across images")
    data, why = normalization(TrainConfig(task="multiclass"), {**even, "exposure_spread": 0.9})
    assert data.normalize == "percentile" and "exposure varies" in why
    data, why = normalization(TrainConfig(task="regression"), even)
    assert data.normalize == "fixed" and "images are their own targets" in why
    given = TrainConfig(data=DataConfig(normalize="image"))
    assert normalization(given, even) == (given.data, "normalize image (as configured)")


# -- the split ------------------------------------------------------------------------------
def test_split_stems_stratifies_by_size_and_background(tmp_path):
    """Images of a rare kind (one large dark image, two light ones) keep training images."""
    root = tmp_path / "mixed"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    specs = [(32, 32, 20)] * 8 + [(64, 96, 20)] + [(32, 32, 230)] * 2  # (h, w, background)
    for i, (h, w, level) in enumerate(specs):
        image = np.full((h, w), level, np.uint8)
        image[2:6, 2:6] = 255 - level  # an object of the other brightness
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray((image == 255 - level).astype(np.uint8)).save(
            root / "masks" / f"{i:02d}.png"
        )
    assert image_kind(root / "images" / "08.png") == (64, 96, False)
    assert image_kind(root / "images" / "09.png") == (32, 32, True)
    info = describe_dataset(root)
    # a fraction asked for: the default (0.2) holds no image of a set this small out
    train, val = split_stems(info, TrainConfig(val_fraction=0.18, seed=0))
    assert len(val) == 2 and "08" in train
    assert {"09", "10"} & set(train)  # the light pair keeps one
    assert sum(s < "08" for s in val) >= 1  # the big group gives its share


def _mixed(root, n: int):
    """``n`` images of three kinds, each one square object of the other brightness."""
    make_mixed_images(root, n)
    return describe_dataset(root)


def test_a_small_set_loses_no_image_to_validation_and_validates_on_bands(tmp_path):
    info = _mixed(tmp_path / "eight", 8)
    cfg = TrainConfig()
    train, val = split_stems(info, cfg)
    assert train == list(info.stems) and val == []
    regions = validation_regions(info, cfg)
    assert regions["00"] == (0, 16, 13, 16)  # square: the right-hand 3 of 16 columns
    assert regions["01"] == (0, 16, 19, 24)  # landscape: 5 of 24 columns
    assert regions["02"] == (19, 24, 0, 16)  # portrait: the bottom 5 of 24 rows
    assert sorted(regions) == list(info.stems)
    line = describe_split(info, cfg, train, val, regions)
    assert "held-out regions: 8 images are fewer than 40" in line and "20%" in line
    # asked for whole images: --val-stems, another fraction; image-to-image: no masks
    for other in (cfg.replace(val_stems=("03",)), cfg.replace(val_fraction=0.25),
                  cfg.replace(task="regression")):  # fmt: skip
        assert validation_regions(info, other) == {}
        assert split_stems(info, other)[1] != [] or other.task == "regression"
    one = _mixed(tmp_path / "one", 1)  # a single image validates too (on its band)
    assert split_stems(one, cfg) == (["00"], []) and list(validation_regions(one, cfg)) == ["00"]


def test_the_split_of_forty_images_and_more_is_unchanged(tmp_path):
    """From 40 images on, the default split is the stratified fifth of whole images, as it
    was before the small-set rule (the stems the earlier code chose, seed 0)."""
    expected = {
        40: ["04", "09", "11", "27", "32", "34", "35", "39"],
        41: ["04", "09", "11", "27", "32", "34", "37", "39"],
    }
    for n, val in expected.items():
        info = _mixed(tmp_path / f"m{n}", n)
        train, got = split_stems(info, TrainConfig())
        assert got == val and len(train) == n - 8
        assert validation_regions(info, TrainConfig()) == {}


# -- in a run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_resume_keeps_the_split_it_started_with(dataset, tmp_path, monkeypatch):
    """A run resumed after the split rule changed keeps its recorded train/val split."""
    cut = tiny_config(
        dataset, tmp_path / "cut", time_budget=1e-6, val_stems=None, val_fraction=0.34
    )
    unetkit.fit(cut)
    before = load_checkpoint(tmp_path / "cut" / "last.pt").train_state["data"]
    assert len(before["val"]) == 2
    monkeypatch.setattr(plan_module, "split_stems", lambda info, cfg: (["00"], ["01"]))
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    after = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert after["data"] == before and after["step"] == 9


def test_instance_task_without_instances_is_refused(dataset, tmp_path, capsys):
    code = main(["train", str(dataset), "-o", str(tmp_path / "r"), "--task", "instance", *TINY])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "instances/" in err[0] and str(dataset) in err[0]
    assert not (tmp_path / "r").exists()


def test_weight_map_default_is_on_for_instances_only(tmp_path):
    from unetkit.data.layout import describe_dataset

    data = make_instance_dataset(tmp_path / "inst", n=1)
    info = describe_dataset(data)
    assert resolve_config(TrainConfig(dataset=str(data), task="instance"), info).weight_map
    assert not resolve_config(TrainConfig(dataset=str(data)), info).weight_map
    off = TrainConfig(dataset=str(data), task="instance", weight_map=False)
    assert not resolve_config(off, info).weight_map
    assert TrainConfig.from_dict(TrainConfig().to_dict()).weight_map is None


def test_a_small_set_trains_on_every_image_and_validates_on_their_bands(dataset, tmp_path):
    """6 images, the default split: none held out whole; each image's right-hand band (8 of
    40 columns) is validated on, recorded in the checkpoint and kept by a resumed run."""
    cfg = tiny_config(dataset, tmp_path / "full", val_stems=None, epochs=2)
    unetkit.fit(cfg)
    state = load_checkpoint(tmp_path / "full" / "last.pt").train_state
    stems = [f"{i:02d}" for i in range(6)]
    assert state["data"]["train"] == stems and state["data"]["val"] == []
    assert state["data"]["val_regions"] == {s: [0, 40, 32, 40] for s in stems}
    assert (tmp_path / "full" / "best.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "full" / "history.csv").open()))
    assert rows[-1]["pixels"] == str(6 * 40 * 8)  # validation scores the bands alone
    assert "min_epoch_crops" not in state  # epochs given: the epoch is one pass
    cut = cfg.replace(run_dir=str(tmp_path / "cut"), time_budget=1e-6)
    unetkit.fit(cut)
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    assert_bitwise_equal(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")
    assert load_checkpoint(tmp_path / "cut" / "last.pt").train_state["data"] == state["data"]


def test_the_default_length_gives_a_small_set_epochs_of_forty_crops(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("unetkit.config.train"), "DEFAULT_EPOCHS", 1)
    run = tmp_path / "run"
    unetkit.fit(tiny_config(dataset, run, epochs=None, steps_per_epoch=0, val_stems=("05",)))
    state = load_checkpoint(run / "last.pt").train_state
    # 5 training images, 8 times each (40 crops) at batch 2: 20 steps, not 3
    assert state["min_epoch_crops"] == 40 and state["step"] == 20 and state["epoch"] == 1
    with_budget = tiny_config(dataset, tmp_path / "budget", epochs=None, steps_per_epoch=0,
                          val_stems=("05",), time_budget=0.05)  # fmt: skip
    unetkit.fit(with_budget)  # the budget decides the length: one pass an epoch
    state = load_checkpoint(tmp_path / "budget" / "last.pt").train_state
    assert "min_epoch_crops" not in state


def test_forty_images_keep_the_plan_they_had(tmp_path, monkeypatch):
    """From 40 images on, nothing of the small-set rule applies: whole images held out (the
    stratified fifth the earlier code chose), one crop per training image an epoch."""
    monkeypatch.setattr(importlib.import_module("unetkit.config.train"), "DEFAULT_EPOCHS", 1)
    root = make_mixed_images(tmp_path / "forty", 40)
    run = tmp_path / "run"
    unetkit.fit(tiny_config(root, run, epochs=None, steps_per_epoch=0, val_stems=None))
    state = load_checkpoint(run / "last.pt").train_state
    assert state["data"]["val"] == ["04", "09", "11", "27", "32", "34", "35", "39"]
    assert set(state["data"]) == {"classes", "train", "val", "dataset"}  # no val_regions
    assert "min_epoch_crops" not in state and state["step"] == 16  # 32 images at batch 2


@pytest.mark.parametrize(
    ("images", "given", "gamma", "said"),
    [
        (8, None, 0.5, "augment gamma 0.5 (gamma 0.61-1.65): 8 images, fewer than 24"),
        (23, None, 0.5, "23 images, fewer than 24"),
        (24, None, 0.1, "augment gamma 0.1 (gamma 0.90-1.11): 24 images"),
        (8, 0.1, 0.1, None),  # given: kept, even the default's value
        (8, 0.0, 0.0, None),  # --no-augment
    ],
)
def test_fewer_than_24_images_widen_the_gamma_augmentation(images, given, gamma, said):
    cfg = _cfg()
    cfg = cfg.replace(augment=cfg.augment.replace(gamma=given))
    out, why = augment_gamma(cfg, images)
    assert out.augment.gamma == gamma and out.augment.replace(gamma=given) == cfg.augment
    assert (why is None) if said is None else (said in why)


def test_an_image_to_image_run_keeps_the_default_gamma_on_few_images():
    cfg = _cfg(preset="restore", model=preset_config("restore"))
    assert augment_gamma(cfg, 8)[0].augment.gamma == 0.1


def test_a_small_run_records_and_says_its_gamma(dataset, tmp_path, caplog):
    """The plan's gamma is the run's: in config.json (a resumed run keeps it) and said."""
    import json
    import logging

    cfg = tiny_config(dataset, tmp_path / "run", epochs=1)
    cfg = cfg.replace(augment=cfg.augment.replace(gamma=None))
    with caplog.at_level(logging.INFO, logger="unetkit"):
        unetkit.fit(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["augment"]["gamma"] == 0.5
    assert "augment gamma 0.5 (gamma 0.61-1.65): 6 images, fewer than 24" in caplog.text
