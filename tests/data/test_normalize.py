"""Intensity normalisation and the data fingerprint (issue 10): statistics of the whole image
in training and prediction alike, the rule that picks the mode, and what the checkpoint keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import unetkit
from hand_wired import CLASSES, PALETTE
from unetkit import DataConfig, PredictConfig, load_checkpoint, make_checkpoint, save_checkpoint
from unetkit.cli import main
from unetkit.data.dataset import SegmentationDataset
from unetkit.data.fingerprint import choose_normalization, compute_fingerprint
from unetkit.data.normalize import image_stats, image_to_tensor, normalization_stats
from unetkit.errors import UnetkitError
from unetkit.infer import Predictor


def _two_exposures(h: int = 48, w: int = 64) -> np.ndarray:
    """A dark left half and a bright right half, with texture: tiles differ from the whole."""
    rng = np.random.default_rng(0)
    image = np.full((h, w), 20.0)
    image[:, w // 2 :] = 230.0
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_image_to_tensor_normalises():
    image = np.array([[[0, 255, 51]]], np.uint8)  # (1, 1, 3)
    cfg = DataConfig(channels=3, mean=(0.0, 0.5, 0.2), std=(1.0, 0.5, 0.1))
    out = image_to_tensor(image, cfg)
    assert out.dtype == torch.float32 and out.shape == (3, 1, 1)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    grey16 = np.full((2, 2), 65535, np.uint16)
    out = image_to_tensor(grey16, DataConfig(channels=1, mean=(0.5,), std=(0.25,)))
    torch.testing.assert_close(out, torch.full((1, 2, 2), 2.0))
    out = image_to_tensor(np.zeros((2, 2, 1), np.uint8), DataConfig(channels=3))
    assert out.shape == (3, 2, 2)  # grey broadcast to RGB
    with pytest.raises(UnetkitError, match="mean has 2 entries"):
        image_to_tensor(image, DataConfig(channels=3, mean=(0.1, 0.2)))


def test_per_image_modes_use_the_whole_image():
    image = _two_exposures()[:, :, None]
    cfg = DataConfig(channels=1, normalize="image")
    whole = image_to_tensor(image, cfg)
    assert float(whole.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(whole.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    stats = normalization_stats(image, cfg)
    crop = image_to_tensor(image[5:20, 3:30], cfg, stats)
    assert torch.equal(crop, whole[:, 5:20, 3:30])  # a crop is the crop of the whole, exactly
    own = image_to_tensor(image[5:20, 3:30], cfg)  # its own statistics: different
    assert not torch.allclose(own, crop, atol=0.1)
    lo, span = image_stats(image, "percentile")
    assert 0 < lo[0] < 0.2 and 0.7 < span[0] < 1.0
    assert normalization_stats(image, DataConfig(normalize="dataset")) is None


def test_fixed_and_dataset_modes_are_the_configured_affine_map():
    image = _two_exposures()[:, :, None]
    cfg = DataConfig(channels=1, normalize="dataset", mean=(0.5,), std=(0.25,))
    expected = (image.astype(np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(image_to_tensor(image, cfg).numpy()[0], expected[:, :, 0], atol=1e-6)
    with pytest.raises(ValueError, match="std must be > 0"):
        DataConfig(std=(0.0,))
    with pytest.raises(ValueError, match="normalize must be one of"):
        DataConfig(normalize="zscore")


def test_tiled_prediction_normalises_with_the_whole_image(tmp_path, grey_level_model):
    """Per-tile statistics would make a dark tile look bright: tiles must use the image's."""
    pre = DataConfig(channels=1, size=(16, 16), normalize="image")
    ckpt = make_checkpoint(grey_level_model(), classes=CLASSES, palette=PALETTE, preprocessing=pre)
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    image = _two_exposures()
    probs = {}
    for strategy in ("full", "tile"):
        cfg = PredictConfig(strategy=strategy, tile=(16, 16), precision="fp32", device="cpu")
        probs[strategy] = Predictor.from_checkpoint(path, cfg).predict_proba(image)
    assert np.allclose(probs["full"], probs["tile"], atol=1e-5)
    mask = probs["tile"].argmax(0)
    assert (mask[:, :28] == 0).mean() > 0.95 and (mask[:, 36:] == 2).mean() > 0.95


def _images(root, exposures: list[float]) -> None:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, level in enumerate(exposures):
        mask = np.zeros((40, 40), np.uint8)
        mask[8:20, 8:20] = 1
        mask[26:34, 24:36] = 1
        image = level * (1 + mask * 1.5) + rng.normal(0, 3, mask.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


def test_the_fingerprint_decides_the_normalisation(tmp_path):
    _images(tmp_path / "mixed", [10, 90, 20, 60])
    _images(tmp_path / "even", [40, 41, 40, 42])
    for name, expected in (("mixed", "percentile"), ("even", "dataset")):
        ds = SegmentationDataset(tmp_path / name)
        fp = compute_fingerprint(((s, *ds.raw(s)) for s in ds.stems), 2)
        assert choose_normalization(fp)[0] == expected, (name, fp["exposure_spread"])
        assert fp["images"] == 4 and fp["size_min"] == [40, 40]
        assert fp["class_share"][1] == pytest.approx((144 + 96) / 1600)
        assert fp["objects"]["1"]["count"] == 8  # two squares in each of 4 masks
        assert fp["objects"]["1"]["area_p50"] == pytest.approx(120)


def test_training_stores_the_fingerprint_and_the_chosen_transform(tmp_path, capsys):
    _images(tmp_path / "mixed", [10, 90, 20, 60, 30, 70])
    cfg = unetkit.TrainConfig(
        dataset=str(tmp_path / "mixed"), run_dir=str(tmp_path / "run"), preset="milesial",
        model=unetkit.preset_config("milesial", base_width=4, depth=2),
        data=DataConfig(size=(32, 32)), epochs=1, batch_size=2, steps_per_epoch=1,
        val_stems=("5",), device="cpu", precision="fp32", panels=0,
    )  # fmt: skip
    unetkit.fit(cfg)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert ckpt.preprocessing.normalize == "percentile"
        assert ckpt.train_state["fingerprint"]["images"] == 5
    even = tmp_path / "even"
    _images(even, [40, 41, 40, 42, 41, 40])
    unetkit.fit(cfg.replace(dataset=str(even), run_dir=str(tmp_path / "run2")))
    pre = load_checkpoint(tmp_path / "run2" / "last.pt").preprocessing
    assert pre.normalize == "dataset" and 0.1 < pre.mean[0] < 0.3 and pre.std[0] > 0.01
    capsys.readouterr()
    assert main(["info", str(tmp_path / "run" / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "fingerprint: 5 images" in out and "exposure spread" in out


def test_a_time_budget_decides_the_length_unless_epochs_are_given(tmp_path, monkeypatch):
    assert unetkit.TrainConfig().max_epochs == 50
    assert unetkit.TrainConfig(time_budget=10).max_epochs > 10**6
    assert unetkit.TrainConfig(time_budget=10, epochs=3).max_epochs == 3
    _images(tmp_path / "d", [40, 41, 40, 42])
    from unetkit.config import train as config_module

    monkeypatch.setattr(config_module, "DEFAULT_EPOCHS", 1)  # the cap a budget must lift

    def run(name: str, budget: float) -> list[dict]:
        cfg = unetkit.TrainConfig(
            dataset=str(tmp_path / "d"), run_dir=str(tmp_path / name), preset="milesial",
            model=unetkit.preset_config("milesial", base_width=4, depth=1),
            data=DataConfig(size=(16, 16)), batch_size=2, steps_per_epoch=1, val_stems=("3",),
            device="cpu", precision="fp32", panels=0, time_budget=budget,
        )  # fmt: skip
        unetkit.fit(cfg)
        return load_checkpoint(tmp_path / name / "last.pt").train_state["history"]

    # the budget is a few times one epoch as measured here: a loaded machine (8 pytest
    # workers on 16 cores ran one epoch in 2 s) must not make the test ask for too little
    assert len(once := run("once", 0)) == 1
    budget = max(0.03, 4 * once[0]["elapsed_min"])
    history = run("run", budget)
    assert len(history) > 1  # ran past the 1-epoch default: the budget decided
    assert history[-1]["elapsed_min"] >= budget * 0.9


def test_normalize_flag_overrides_the_fingerprint(tmp_path, capsys):
    _images(tmp_path / "d", [10, 90, 20, 60])
    args = ["train", str(tmp_path / "d"), "--preset", "milesial", "--base-width", "4",
            "--depth", "2", "--patch-size", "32", "--epochs", "1", "--steps-per-epoch", "1",
            "--device", "cpu", "--precision", "fp32", "--val-stems", "3"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "r"), "--normalize", "image"]) == 0
    assert load_checkpoint(tmp_path / "r" / "last.pt").preprocessing.normalize == "image"
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "x"), "--normalize", "zscore"]) == 2
    err = capsys.readouterr().err
    assert "--normalize" in err and "Traceback" not in err


def test_onnx_export_carries_the_normalisation(tmp_path, grey_level_model):
    from unetkit.export import export_model

    pre = DataConfig(channels=1, size=(16, 16), normalize="image")
    ckpt = make_checkpoint(grey_level_model(), classes=CLASSES, palette=PALETTE, preprocessing=pre)
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    export_model(path, "onnx", tmp_path / "m.onnx")
    cfg = PredictConfig(strategy="tile", tile=(16, 16), precision="fp32", device="cpu")
    onnx = Predictor.from_onnx(tmp_path / "m.onnx", cfg)
    assert onnx.info.preprocessing.normalize == "image"
    image = _two_exposures()
    reference = Predictor.from_checkpoint(path, cfg).predict_proba(image)
    np.testing.assert_allclose(onnx.predict_proba(image), reference, atol=1e-5)
