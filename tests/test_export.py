"""ONNX / TorchScript export: dynamic sizes, embedded metadata, parity check, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

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
    import unetkit.export as export

    path, _ = checkpoints["same"]
    monkeypatch.setattr(export, "_runner", lambda fmt, p: lambda x: np.zeros((1, 3, 1, 1)))
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
    assert "export format must be one of onnx, torchscript" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_carries_the_checkpoint_card_whole(checkpoints, fmt, tmp_path):
    """One model card: the export's metadata is the checkpoint's card, every field."""
    from unetkit import load_checkpoint
    from unetkit.card import ModelCard
    from unetkit.infer.backends import load_onnx

    path, _ = checkpoints["same"]
    out = tmp_path / f"m.{fmt}"
    export_model(path, fmt, out)
    card = load_checkpoint(path).card.to_dict()
    if fmt == "onnx":
        assert load_onnx(out).info.to_dict() == card
    else:
        assert ModelCard.from_dict(read_torchscript_metadata(out)).to_dict() == card
