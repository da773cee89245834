"""BioImage.IO model packages: built with bioimageio.spec, tested with bioimageio.core."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from conftest import sharpen_head
from unetkit import DataConfig, PredictConfig, Predictor, UnetkitError, save_checkpoint
from unetkit.cli import main

pytest.importorskip("bioimageio.core")

KINDS = {  # (channels, normalize, task, classes): the demo, a DSB-like and an ISBI-like model
    "demo": (3, "image", "multiclass", ["background", "cell", "nucleus"]),
    "dsb": (1, "percentile", "instance", ["background", "nucleus"]),
    "isbi": (1, "dataset", "multiclass", ["background", "membrane"]),
}
OBJECTS = {"boundary_width": 2, "min_size": 5, "min_score": 0.8, "fg_threshold": 0.5}


def _checkpoint(kind: str, folder, tiny_model, tiny_checkpoint):
    channels, normalize, task, classes = KINDS[kind]
    out = len(classes) + (task == "instance")
    model = sharpen_head(tiny_model("milesial", in_channels=channels, out_channels=out, seed=3))
    pre = DataConfig(channels=channels, size=(128, 128), normalize=normalize,
                     mean=(0.45,), std=(0.2,))  # fmt: skip
    ckpt = tiny_checkpoint(
        model, classes=classes, preprocessing=pre, task=task,
        extra={"objects": OBJECTS} if task == "instance" else None,
        train_state={"data": {"train": ["secret_stem_0417"], "val": []}},
    )  # fmt: skip
    return save_checkpoint(ckpt, folder / f"{kind}.pt")


def _sample(path, channels: int, seed: int = 1):
    from unetkit.data.writers import write_image

    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.normal(0, 1, (90, 101, channels)), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 0.6 + 0.2
    image = np.rint(smooth * 255).astype(np.uint8)
    write_image(path, image if channels == 3 else image[:, :, 0])
    return path


@pytest.mark.parametrize("kind", list(KINDS))
def test_package_passes_bioimageio_test_and_predicts_as_unetkit(
    kind, tiny_model, tiny_checkpoint, tmp_path
):
    from bioimageio.core import create_prediction_pipeline, load_description
    from bioimageio.core.digest_spec import get_test_input_sample

    from unetkit.bioimageio import export_bioimageio

    ckpt = _checkpoint(kind, tmp_path, tiny_model, tiny_checkpoint)
    channels, normalize, task, classes = KINDS[kind]
    out = tmp_path / "model.zip"
    result = export_bioimageio(ckpt, out, sample=_sample(tmp_path / "s.png", channels))
    assert result["test"] == {"torchscript": "passed", "onnx": "passed"}  # bioimageio.core
    assert result["test_input"] == [1, channels, 88, 100]  # the sample's centre, legal size
    # the package's prediction on its test input equals unetkit's on the same pixels
    descr = load_description(out)
    sample = get_test_input_sample(descr)
    image = sample.members["image"].data.values[0].transpose(1, 2, 0).copy()  # (H, W, C) uint8
    assert image.dtype == np.uint8
    pipeline = create_prediction_pipeline(descr, weight_format="onnx")
    # the whole test tensor, as the test output was made (bioimageio.core's plain ``predict``
    # pads by the output halo first, which changes the borders and the per-image statistics)
    whole = pipeline.predict_sample_without_blocking(
        sample, skip_input_padding=True, skip_output_cropping=True
    )
    package = whole.members["probabilities"].data.values[0]
    predictor = Predictor.load(ckpt, PredictConfig(precision="fp32"))
    probs = predictor.predict_proba(image)
    np.testing.assert_allclose(package, probs, atol=2e-4)
    mask = predictor.predict(image)
    assert len(np.unique(probs.argmax(0))) > 1  # not a trivial prediction
    np.testing.assert_array_equal(predictor.probs_to_mask(package), mask)
    # what the rdf.yaml says
    rdf = descr.model_dump(mode="json")
    names = {"demo": ["red", "green", "blue"], "dsb": ["grey"], "isbi": ["grey"]}[kind]
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == names
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 20, "step": 4}
    assert rdf["outputs"][0]["axes"][2]["halo"] == 8
    ops = [op["id"] for op in rdf["inputs"][0]["preprocessing"]]
    expected = {
        "image": ["zero_mean_unit_variance"],
        "percentile": ["scale_range"],
        "dataset": ["scale_linear", "fixed_zero_mean_unit_variance"],
    }[normalize]
    assert ops == ["ensure_dtype", *expected, "ensure_dtype"]
    if normalize == "dataset":
        kwargs = rdf["inputs"][0]["preprocessing"][2]["kwargs"]
        assert kwargs["mean"] == [0.45] and kwargs["std"] == [0.2]
    if normalize == "percentile":
        kwargs = rdf["inputs"][0]["preprocessing"][1]["kwargs"]
        assert (kwargs["min_percentile"], kwargs["max_percentile"]) == (1.0, 99.8)
    assert [op["id"] for op in rdf["outputs"][0]["postprocessing"]][0] == "softmax"
    assert rdf["weights"]["onnx"]["parent"] == "torchscript"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    config = rdf["config"]["unetkit"]
    assert config["input_contract"]["input"]["normalize"]["mode"] == normalize
    assert (config.get("objects") == OBJECTS) == (task == "instance")
    with zipfile.ZipFile(out) as zf:
        assert {"README.md", "cover.png", "weights.pt", "weights.onnx"} <= set(zf.namelist())
        assert "Validation" in zf.read("README.md").decode()
        assert not any(b"secret_stem_0417" in zf.read(n) for n in zf.namelist())


def test_a_failed_test_leaves_no_package(tiny_model, tiny_checkpoint, tmp_path, monkeypatch):
    import unetkit.bioimageio as bio

    ckpt = _checkpoint("isbi", tmp_path, tiny_model, tiny_checkpoint)
    monkeypatch.setattr(bio, "test_package", lambda p: {"torchscript": "passed", "onnx": "bad"})
    out = tmp_path / "out" / "model.zip"
    with pytest.raises(UnetkitError, match=r"model\.zip: bioimageio test failed: onnx: bad"):
        bio.export_bioimageio(ckpt, out)
    assert list(out.parent.iterdir()) == []


def test_without_bioimageio_core_says_which_extra(
    tiny_model, tiny_checkpoint, tmp_path, monkeypatch
):
    import sys

    from unetkit.bioimageio import export_bioimageio

    ckpt = _checkpoint("isbi", tmp_path, tiny_model, tiny_checkpoint)
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # import raises ImportError
    with pytest.raises(UnetkitError, match=r"needs bioimageio\.core .*unetkit\[bioimageio\]"):
        export_bioimageio(ckpt, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def test_regression_models_are_refused_in_one_line(tiny_model, tiny_checkpoint, tmp_path):
    from unetkit.bioimageio import export_bioimageio

    model = tiny_model("milesial", in_channels=1, out_channels=1)
    ckpt = save_checkpoint(
        tiny_checkpoint(model, classes=["image"], task="regression"), tmp_path / "r.pt"
    )
    with pytest.raises(UnetkitError, match=r"r\.pt: a regression .* not exported") as info:
        export_bioimageio(ckpt, tmp_path / "r.zip")
    assert "\n" not in str(info.value) and not (tmp_path / "r.zip").exists()


def test_export_cli_bioimageio(tiny_model, tiny_checkpoint, tmp_path, capsys):
    from bioimageio.spec import load_description

    ckpt = _checkpoint("demo", tmp_path, tiny_model, tiny_checkpoint)
    out = tmp_path / "model.zip"
    args = ["export", str(ckpt), "--format", "bioimageio", "-o", str(out), "--no-check",
            "--author", "A. Author", "--author", "B. Author", "--name", "Cells"]  # fmt: skip
    assert main(args) == 0
    assert f"exported bioimageio: {out}" in capsys.readouterr().out
    descr = load_description(out)
    assert descr.name == "Cells" and [a.name for a in descr.authors] == ["A. Author", "B. Author"]
    assert main([*args[:6], "--input-dtype", "int8"]) == 2
    assert "--input-dtype must be one of uint8, uint16" in capsys.readouterr().err
    rdf = json.loads(descr.model_dump_json())
    assert rdf["inputs"][0]["data"]["type"] == "uint8"
