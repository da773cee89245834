"""ONNX / TorchScript export: dynamic sizes, embedded metadata, parity check, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import sharpen_head
from unetkit import DataConfig, UnetkitError, save_checkpoint
from unetkit.cli import main
from unetkit.export import (
    check_parity,
    export_model,
    read_onnx_metadata,
    read_torchscript_metadata,
)

CLASSES = ["background", "cell", "membrane"]
PALETTE = [[0, 0, 0], [10, 200, 30], [250, 5, 5]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model, tiny_checkpoint) -> dict:
    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, preset, size in (("same", "milesial", (48, 40)), ("valid", "paper", (60, 60))):
        model = tiny_model(preset, in_channels=1, out_channels=3)
        pre = DataConfig(channels=1, size=size, mean=(0.4,), std=(0.2,))
        ckpt = tiny_checkpoint(
            model, classes=CLASSES, palette=PALETTE, preprocessing=pre, preset=preset
        )
        out[name] = (save_checkpoint(ckpt, folder / f"{name}.pt"), model.eval())
    return out


@pytest.mark.parametrize("kind", ["same", "valid"])
def test_onnx_has_dynamic_sizes_and_the_checkpoint_metadata(checkpoints, kind, tmp_path):
    path, model = checkpoints[kind]
    out = tmp_path / "m.onnx"
    result = export_model(path, "onnx", out)
    train_size = {"same": (48, 40), "valid": (60, 60)}[kind]
    assert [r["size"] for r in result["parity"]] == [  # a small legal size, the training size
        [model.legal_sizes(37)[1], model.legal_sizes(45)[1]],
        [model.legal_sizes(n)[1] for n in train_size],
    ]
    assert all(r["max_abs_diff"] <= 1e-4 and r["agreement"] >= 0.9999 for r in result["parity"])
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["unetkit.classes"]) == CLASSES
    assert json.loads(props["unetkit.palette"]) == PALETTE
    meta = read_onnx_metadata(out)
    assert meta["preprocessing"]["mean"] == [0.4] and meta["model_config"]["base_width"] == 4
    # a third size and batch, never seen at export time
    h, w = model.legal_sizes(70)[1], model.legal_sizes(90)[1]
    x = torch.rand(3, 1, h, w)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_torchscript_carries_metadata_and_matches(checkpoints, tmp_path):
    path, model = checkpoints["same"]
    out = tmp_path / "m.ts"
    export_model(path, "torchscript", out)
    meta = read_torchscript_metadata(out)
    assert meta["classes"] == CLASSES and meta["task"] == "multiclass"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        loaded = torch.jit.load(str(out))
    x = torch.rand(2, 1, 52, 44)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)


def test_parity_failure_says_by_how_much(checkpoints):
    _, model = checkpoints["same"]

    def off_by_a_bit(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy() + 3e-3

    with pytest.raises(
        UnetkitError,
        match=r"m\.onnx: parity check failed at input 40x48: "
        r"max \|logit difference\| 0\.003 \(limit 0\.0001\)",
    ):
        check_parity(model, off_by_a_bit, [(40, 48)], "m.onnx")

    def swapped_classes(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()[:, ::-1]

    with pytest.raises(UnetkitError, match=r"argmax agreement \d+\.\d+ %"):
        check_parity(model, swapped_classes, [(40, 48)], "m.onnx")


def test_a_failed_check_leaves_no_file(checkpoints, tmp_path, monkeypatch):
    import unetkit.export.formats as formats

    path, _ = checkpoints["same"]
    monkeypatch.setattr(formats, "runner", lambda fmt, p: lambda x: np.zeros((1, 3, 1, 1)))
    out = tmp_path / "bad.onnx"
    with pytest.raises(UnetkitError, match="parity check failed"):
        export_model(path, "onnx", out)
    assert list(tmp_path.iterdir()) == []


def test_export_cli(checkpoints, tmp_path, capsys):
    path, _ = checkpoints["valid"]
    out = tmp_path / "model.onnx"
    assert main(["export", str(path), "--format", "onnx", "-o", str(out)]) == 0
    assert out.is_file() and "argmax agreement 100.0000 %" in capsys.readouterr().out
    assert main(["export", str(path), "--format", "tflite", "-o", str(out)]) == 2
    assert "export format must be one of onnx, torchscript, bioimageio" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_carries_the_checkpoint_card_for_prediction(checkpoints, fmt, tmp_path):
    """One model card: the export's metadata is the checkpoint's card as exported."""
    from unetkit import load_checkpoint
    from unetkit.card import ModelCard
    from unetkit.infer.backends import load_onnx

    path, _ = checkpoints["same"]
    out = tmp_path / f"m.{fmt}"
    export_model(path, fmt, out)
    card = load_checkpoint(path).card.to_export_dict()
    if fmt == "onnx":
        assert load_onnx(out).info.to_export_dict() == card
    else:
        assert ModelCard.from_dict(read_torchscript_metadata(out)).to_export_dict() == card


SECRET = "secret_stem_0417"  # a training image name that must not travel with the model


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory, tiny_model, tiny_checkpoint):
    """A checkpoint as training saves it: split, fingerprint, random-crop, cache, sampling."""
    model = tiny_model("milesial", in_channels=3, out_channels=3)
    pre = DataConfig(channels=3, resize="random-crop", size=(96, 96), normalize="image",
                     oversample=0.5, sampling="area")  # fmt: skip
    state = {
        "fingerprint": {"images": 2, "per_image": [{"stem": SECRET, "mean": [0.41]}]},
        "data": {"classes": CLASSES, "train": [SECRET], "val": ["val_stem_0418"]},
    }
    ckpt = tiny_checkpoint(model, classes=CLASSES, palette=PALETTE, preprocessing=pre,
                           train_state=state)  # fmt: skip
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("trained") / "best.pt")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_hold_nothing_about_the_training_data(trained_like, fmt, tmp_path):
    from unetkit import load_checkpoint

    assert load_checkpoint(trained_like).card.split  # the checkpoint has them
    out = tmp_path / f"m.{fmt}"
    export_model(trained_like, fmt, out)
    raw = out.read_bytes()
    assert SECRET.encode() not in raw and b"val_stem_0418" not in raw
    if fmt == "onnx":
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        meta = {k.removeprefix("unetkit."): json.loads(v) for k, v in meta.items()}
    else:
        meta = read_torchscript_metadata(out)
    assert not {"split", "fingerprint"} & set(meta)
    pre = meta["preprocessing"]
    assert pre["resize"] == "none" and pre["normalize"] == "image"
    assert not {"oversample", "sampling", "cache", "binary_255", "mean", "std"} & set(pre)
    assert "random-crop" not in json.dumps(meta)
    contract = meta["input_contract"]
    assert contract["input"]["channel_order"] == "RGB"
    assert contract["input"]["value_scale"] == {"uint8": 255, "uint16": 65535, "float": 1}
    assert contract["input"]["normalize"]["mode"] == "image"
    assert contract["input"]["size"] == {"min": 4, "step": 4, "rule": ANY}
    assert contract["output"]["activation"] == "softmax"


class _Any:
    def __eq__(self, other):
        return True


ANY = _Any()

# Reads only the ONNX file's own metadata, with onnxruntime and numpy: what a user without
# unetkit writes from the input contract. Run with ``python -I`` (no PYTHONPATH, no unetkit).
PLAIN_RUNTIME = r"""
import json, sys
import numpy as np
import onnxruntime as ort

model, image_path, out_path = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
contract = json.loads(session.get_modelmeta().custom_metadata_map["unetkit.input_contract"])
inp, out = contract["input"], contract["output"]
image = np.load(image_path)
image = image[:, :, None] if image.ndim == 2 else image
assert image.shape[2] == inp["channels"], image.shape
kind = "float" if image.dtype.kind == "f" else image.dtype.name
x = image.astype(np.float32) / np.float32(inp["value_scale"][kind])
norm = inp["normalize"]
pixels = x.reshape(-1, x.shape[2])
if norm["mode"] == "image":
    shift, scale = pixels.mean(0), pixels.std(0)
elif norm["mode"] == "percentile":
    shift, high = np.percentile(pixels, norm["percentiles"], axis=0)
    scale = high - shift
else:
    shift, scale = np.array(norm["mean"]), np.array(norm["std"])
x = (x - shift.astype(np.float32)) / np.maximum(scale, 1e-6).astype(np.float32)
h, w = x.shape[:2]
size = inp["size"]
legal = [max(size["min"], size["min"] + -(-(n - size["min"]) // size["step"]) * size["step"])
         for n in (h, w)]
x = np.pad(x, ((0, legal[0] - h), (0, legal[1] - w), (0, 0)), mode="reflect")
logits = session.run(None, {inp["name"]: x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
logits = logits[0, :, :h, :w]
assert out["activation"] == "softmax" and out["offset"] == 0
np.save(out_path, logits.argmax(0))
assert "unetkit" not in sys.modules
"""


@pytest.mark.parametrize(
    ("normalize", "channels", "dtype"),
    [("image", 3, np.uint8), ("percentile", 1, np.uint16), ("dataset", 1, np.uint8)],
)
def test_plain_onnxruntime_with_the_contract_matches_unetkit_predict(
    normalize, channels, dtype, tiny_model, tiny_checkpoint, tmp_path
):
    import subprocess
    import sys

    from unetkit import PredictConfig, Predictor
    from unetkit.data.imageio import read_image
    from unetkit.data.writers import write_image

    model = sharpen_head(tiny_model("milesial", in_channels=channels, out_channels=3, seed=3))
    pre = DataConfig(channels=channels, size=(96, 96), normalize=normalize,
                     mean=(0.45,), std=(0.2,))  # fmt: skip
    ckpt = save_checkpoint(
        tiny_checkpoint(model, classes=CLASSES, palette=PALETTE, preprocessing=pre),
        tmp_path / "m.pt",
    )
    export_model(ckpt, "onnx", tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max
    smooth = np.cumsum(rng.normal(0, 1, (61, 77, channels)), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 0.6 + 0.2  # not the full range
    image = np.rint(smooth * top).astype(dtype)
    write_image(tmp_path / "img.png", image if channels == 3 else image[:, :, 0])
    np.save(tmp_path / "img.npy", read_image(tmp_path / "img.png"))  # the pixels as decoded
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_RUNTIME)
    run = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "m.onnx"), str(tmp_path / "img.npy"),
         str(tmp_path / "mask.npy")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    expected = Predictor.load(tmp_path / "m.onnx").predict(read_image(tmp_path / "img.png"))
    plain = np.load(tmp_path / "mask.npy")
    assert len(np.unique(expected)) > 1  # not a trivial mask
    np.testing.assert_array_equal(plain, expected)
    # the checkpoint predicts the same masks (in fp32, as the ONNX file runs)
    torch_predictor = Predictor.load(ckpt, PredictConfig(precision="fp32"))
    np.testing.assert_array_equal(torch_predictor.predict(read_image(tmp_path / "img.png")),
                                  expected)  # fmt: skip


def test_onnx_doc_string_states_the_contract(trained_like, tmp_path):
    out = tmp_path / "m.onnx"
    export_model(trained_like, "onnx", out)
    text = onnx.load(str(out)).doc_string
    assert "RGB order" in text and "uint8 / 255" in text and "4 + n * 4" in text
    assert "(x - mean) / max(std, 1e-6) per image and channel" in text


def test_export_cli_prints_each_parity_line_once(checkpoints, tmp_path, capsys, caplog):
    import logging

    path, _ = checkpoints["same"]
    with caplog.at_level(logging.INFO):
        assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 0
    shown = capsys.readouterr()
    lines = (shown.out + shown.err).splitlines()
    lines += [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("parity" in line for line in lines) == 2  # two sizes, one line each
    assert sum("exported" in line for line in lines) == 1


def test_distance_head_onnx_predicts_the_checkpoints_objects(tmp_path, grey_level_model):
    """A distance-head instance model exported to ONNX: its contract names the distance
    channel and its activations, unetkit predicts the same objects from the file as from the
    checkpoint, and a BioImage.IO package (one postprocessing for all channels) is refused."""
    from hand_wired import cells, distance_checkpoint, load_predictor
    from unetkit.bioimageio import export_bioimageio
    from unetkit.data.targets import object_distance

    path = distance_checkpoint(tmp_path, grey_level_model)
    onnx_path = tmp_path / "distance.onnx"
    export_model(path, "onnx", onnx_path)
    meta = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    output = json.loads(meta["unetkit.input_contract"])["output"]
    assert output["channel_names"] == ["background", "cell", "distance"]
    assert output["activation_channels"] == [0, 2] and output["last_channel"] == "sigmoid"
    _, truth = cells(60, 75)
    image = np.rint(255 * np.where(truth > 0, 0.5 + 0.5 * object_distance(truth), 0.1))
    image = image.astype(np.uint8)
    mask_c, ids_c = load_predictor(path).predict_objects(image)
    from unetkit.config import PredictConfig
    from unetkit.infer.predict import Predictor

    onnx_predictor = Predictor.load(onnx_path, PredictConfig(precision="fp32"), "cpu")
    mask_o, ids_o = onnx_predictor.predict_objects(image)
    assert ids_c.max() == truth.max() > 1
    assert (ids_o == ids_c).all() and (mask_o == mask_c).all()
    with pytest.raises(UnetkitError, match="distance-head"):
        export_bioimageio(path, tmp_path / "distance.zip")
    assert not list(tmp_path.glob("distance.zip*"))


def test_rays_head_onnx_predicts_the_checkpoints_objects(tmp_path):
    """A rays-head instance model exported to ONNX: its contract names the distance and ray
    channels and how to read them, unetkit predicts the same objects from the file as from
    the checkpoint, and a BioImage.IO package is refused in one line."""
    from hand_wired import RAYS, cells, load_predictor, rays_checkpoint, rays_image
    from unetkit.bioimageio import export_bioimageio
    from unetkit.config import PredictConfig
    from unetkit.infer.predict import Predictor

    path = rays_checkpoint(tmp_path)
    onnx_path = tmp_path / "rays.onnx"
    export_model(path, "onnx", onnx_path)
    meta = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    contract = json.loads(meta["unetkit.input_contract"])
    output = contract["output"]
    names = ["background", "cell", "distance"] + [f"ray{i}" for i in range(RAYS)]
    assert output["channel_names"] == names
    assert output["activation_channels"] == [0, 2] and output["distance_channel"] == "sigmoid"
    assert output["ray_channels"]["channels"] == [3, 3 + RAYS]
    assert contract["objects"]["head"] == "rays" and contract["objects"]["ray_scale"] == 4.0
    _, truth = cells(60, 75)
    image = rays_image(truth)
    mask_c, ids_c = load_predictor(path).predict_objects(image)
    onnx_predictor = Predictor.load(onnx_path, PredictConfig(precision="fp32"), "cpu")
    mask_o, ids_o = onnx_predictor.predict_objects(image)
    assert ids_c.max() == truth.max() > 1
    assert (ids_o == ids_c).all() and (mask_o == mask_c).all()
    with pytest.raises(UnetkitError, match="rays-head"):
        export_bioimageio(path, tmp_path / "rays.zip")
    assert not list(tmp_path.glob("rays.zip*"))


def test_offsets_head_onnx_predicts_the_checkpoints_objects(tmp_path):
    """An offsets-head instance model exported to ONNX: its contract names the boundary and
    offset channels, unetkit predicts the same objects from the file as from the checkpoint
    (objects that only the offsets separate), and a BioImage.IO package is refused."""
    from hand_wired import cells, load_predictor, offsets_checkpoint, offsets_image
    from unetkit.bioimageio import export_bioimageio
    from unetkit.config import PredictConfig
    from unetkit.infer.predict import Predictor

    path = offsets_checkpoint(tmp_path)
    onnx_path = tmp_path / "offsets.onnx"
    export_model(path, "onnx", onnx_path)
    meta = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    contract = json.loads(meta["unetkit.input_contract"])
    output = contract["output"]
    assert output["channel_names"] == ["background", "cell", "boundary", "offset_x", "offset_y"]
    assert output["activation_channels"] == [0, 3] and output["offset_channels"] == [3, 5]
    assert contract["objects"]["head"] == "offsets" and "offsets" in output["mask"]
    _, truth = cells(60, 75)
    image = offsets_image(truth)
    mask_c, ids_c = load_predictor(path).predict_objects(image)
    onnx_predictor = Predictor.load(onnx_path, PredictConfig(precision="fp32"), "cpu")
    mask_o, ids_o = onnx_predictor.predict_objects(image)
    assert ids_c.max() == truth.max() > 1
    assert (ids_o == ids_c).all() and (mask_o == mask_c).all()
    with pytest.raises(UnetkitError, match="offsets-head"):
        export_bioimageio(path, tmp_path / "offsets.zip")
    assert not list(tmp_path.glob("offsets.zip*"))
