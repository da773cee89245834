"""int8 export (``unetkit.quantize``): calibration on the recorded training images, the
accuracy gate, the metadata, and prediction with the int8 file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import make_grey_level_model, make_tiny_dataset
from unetkit import (
    DataConfig,
    PredictConfig,
    Predictor,
    UnetkitError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from unetkit.cli import main
from unetkit.data.imageio import read_image
from unetkit.data.normalize import image_to_tensor, normalization_stats
from unetkit.infer import backends
from unetkit.quantize import calibration_tiles, find_calibration

for _module in ("onnxruntime", "onnx", "nncf", "openvino"):  # unetkit[openvino]
    pytest.importorskip(_module)

CLASSES = ["background", "cell", "nucleus"]
PALETTE = [[0, 0, 0], [0, 200, 0], [200, 0, 0]]


def _checkpoint(folder: Path, dataset: Path | None, normalize: str = "fixed"):
    """The grey-level model (right on ``make_tiny_dataset``'s images without training), its
    split recorded as training records it: 00-03 train, 04-05 val, and where they are."""
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), normalize=normalize,
                     mean=(0.5,), std=(0.25,))  # fmt: skip
    data = {"classes": CLASSES, "train": ["00", "01", "02", "03"], "val": ["04", "05"]}
    if dataset is not None:
        data["dataset"] = str(dataset.resolve())
    ckpt = make_checkpoint(make_grey_level_model(), classes=CLASSES, palette=PALETTE,
                           preprocessing=pre, train_state={"data": data})  # fmt: skip
    return save_checkpoint(ckpt, folder / "model.pt")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("int8")
    dataset = make_tiny_dataset(folder / "ds")
    ckpt = _checkpoint(folder, dataset)
    out = folder / "model_int8.onnx"
    assert main(["export", str(ckpt), "--int8", "-o", str(out)]) == 0
    return {"ckpt": ckpt, "onnx": out, "dataset": dataset, "folder": folder}


def test_int8_predicts_as_full_precision_and_runs_on_openvino(exported):
    int8 = Predictor.load(exported["onnx"], PredictConfig(device="cpu"))
    full = Predictor.load(exported["ckpt"], PredictConfig(device="cpu", precision="fp32"))
    assert int8.network.precision == "int8" and int8.network.backend.startswith("openvino")
    for stem in ("04", "05"):
        image = read_image(exported["dataset"] / "images" / f"{stem}.png", 1)
        assert np.mean(int8.predict_mask(image) == full.predict_mask(image)) >= 0.99
        np.testing.assert_allclose(int8.predict_proba(image), full.predict_proba(image), atol=0.1)


def test_metadata_holds_the_gate_and_info_shows_it(exported, capsys):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    record = json.loads(props["unetkit.int8"])
    gate = record["gate"]
    assert gate["images"] == 2 and gate["max_loss"] == 0.5
    assert set(gate["full"]) == {"mean_iou", "mean_dice"}  # a semantic model: no AP
    assert gate["full"]["mean_iou"] > 95 and abs(gate["loss"]["mean_iou"]) <= 0.5
    assert (
        record["calibration"]["images"] == 4
        and "recorded in the model" in (record["calibration"]["said"])
    )
    capsys.readouterr()
    assert main(["info", str(exported["onnx"])]) == 0
    text = capsys.readouterr().out
    assert "int8 accuracy  mean IoU" in text and "on 2 images; limit 0.5 points" in text
    assert "calibration    " in text and "training images recorded" in text


def test_gate_refuses_in_one_line_with_exit_2_and_writes_nothing(exported, tmp_path, capsys):
    out = tmp_path / "refused.onnx"
    code = main(["export", str(exported["ckpt"]), "--int8", "-o", str(out), "--max-loss", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: int8 refused: it loses")
    assert "limit --max-loss -1" in err[0] and "nothing was written" in err[0]
    assert list(tmp_path.iterdir()) == []  # no file, no temporary file


def test_predict_writes_what_the_torch_path_writes(exported, tmp_path):
    images = str(exported["dataset"] / "images" / "0[45].png")
    for name, model in (("torch", exported["ckpt"]), ("int8", exported["onnx"])):
        args = ["predict", str(model), images, "-o", str(tmp_path / name), "--objects"]
        assert main([*args, "--no-progress"]) == 0
    torch_files = sorted(p.name for p in (tmp_path / "torch").iterdir())
    assert torch_files == sorted(p.name for p in (tmp_path / "int8").iterdir())
    assert "04_overlay.png" in torch_files and "summary.csv" in torch_files


def test_without_openvino_onnxruntime_runs_it_and_says_it_is_slower(exported, monkeypatch, caplog):
    monkeypatch.setattr(backends, "_has_openvino", lambda: False)
    with caplog.at_level(logging.WARNING):
        network = backends.load_onnx(exported["onnx"], "cpu")
    assert network.backend == "onnxruntime" and network.precision == "int8"
    assert "install OpenVINO" in caplog.text
    image = read_image(exported["dataset"] / "images" / "04.png", 1)
    full = Predictor.load(exported["ckpt"], PredictConfig(device="cpu", precision="fp32"))
    mask = Predictor(network, PredictConfig(device="cpu")).predict_mask(image)
    assert np.mean(mask == full.predict_mask(image)) >= 0.99


def test_calibration_tiles_are_normalised_as_prediction_normalises(tmp_path):
    """Per-image normalisation: a tile's statistics are those of its whole image."""
    dataset = make_tiny_dataset(tmp_path / "ds", n=6, size=40)
    ckpt = load_checkpoint(_checkpoint(tmp_path, dataset, "image"))
    calib = find_calibration(ckpt, "model.pt")
    assert calib.train == ["00", "01", "02", "03"] and calib.gate == ["04", "05"]
    card = ckpt.card.for_export()
    tiles, size = calibration_tiles(calib, card, samples=100)
    assert len(tiles) == 16 and size == (28, 28)  # 2 x 2 tiles of each 40 x 40 image
    image = read_image(dataset / "images" / "00.png", 1)
    whole = image_to_tensor(
        image, card.preprocessing, normalization_stats(image, card.preprocessing)
    )
    np.testing.assert_allclose(tiles[0][0], whole[:, :28, :28].numpy(), rtol=1e-6)
    assert len(calibration_tiles(calib, card, samples=5)[0]) == 5


def test_without_recorded_data_it_asks_for_calibrate(tmp_path):
    ckpt = load_checkpoint(_checkpoint(tmp_path, None))
    with pytest.raises(UnetkitError, match="records no training data.*--calibrate DATASET"):
        find_calibration(ckpt, "model.pt")
    some = make_tiny_dataset(tmp_path / "some", n=3)  # training images, no validation image
    calib = find_calibration(ckpt, "model.pt", some)
    assert calib.train == calib.gate == ["00", "01", "02"]
    assert calib.said.endswith("3 training images recorded in the model (validation images: "
                               "not in that folder)")  # fmt: skip
    other = make_tiny_dataset(tmp_path / "other", n=3)
    for path in (other / "images").iterdir():  # none of the recorded images
        path.rename(path.with_name("x" + path.name))
        (other / "masks" / path.name).rename(other / "masks" / ("x" + path.name))
    calib = find_calibration(ckpt, "model.pt", other)
    assert calib.train == calib.gate == ["x00", "x01", "x02"] and "all 3 images" in calib.said
    assert str(tmp_path) not in calib.said  # it goes into the exported file: no paths


def test_nncf_sends_no_telemetry():
    from unetkit.quantize import _nncf

    _nncf()
    from nncf.telemetry import decorator, wrapper

    assert isinstance(decorator.telemetry, wrapper.NNCFTelemetryStub)
