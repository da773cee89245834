"""The contract every model preset keeps (as segmentation_models_pytorch's model tester does):
it builds, runs at legal sizes and refuses illegal ones in one line, survives a checkpoint
round trip with identical outputs, and exports to ONNX with the same logits (onnxruntime).

Each preset runs at base width 4 and depth 2 (its own layers, shrunk), so the file is fast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from unetkit import PRESETS, DataConfig, UnetkitError, load_model, preset_config, save_checkpoint
from unetkit.export import export_model


def _task(name: str) -> str:
    config = preset_config(name)
    if name in ("restore", "x3"):
        return "regression"
    return "binary" if config.head == "sigmoid" and config.out_channels == 1 else "multiclass"


def _sizes(model) -> list[tuple[int, int]]:
    """Two legal, non-square sizes (swapped axes show), one of them odd-ish where allowed."""
    return [
        (model.legal_sizes(37)[1], model.legal_sizes(45)[1]),
        (model.legal_sizes(64)[1], model.legal_sizes(50)[1]),
    ]


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset(request, tmp_path_factory, tiny_model, tiny_checkpoint) -> dict:
    """The preset shrunk, with batch-norm statistics moved off their defaults, saved."""
    name = request.param
    model = tiny_model(name).train()
    sizes = _sizes(model)
    with torch.no_grad():
        model(torch.rand(2, model.config.in_channels, *sizes[0]))  # running stats move
    model.eval()
    out = model.config.out_channels
    task = _task(name)
    classes = ["image"] if task == "regression" else [f"c{i}" for i in range(max(2, out))]
    pre = DataConfig(channels=model.config.in_channels, size=sizes[1])
    ckpt = tiny_checkpoint(model, classes=classes, preprocessing=pre, task=task, preset=name)
    path = save_checkpoint(ckpt, tmp_path_factory.mktemp(name) / "m.pt")
    return {"name": name, "model": model, "sizes": sizes, "path": path}


def _input(model, size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(size))
    return torch.rand(batch, model.config.in_channels, *size, generator=gen)


def test_forward_at_legal_sizes_gives_the_promised_shape(preset):
    model = preset["model"]
    for size in preset["sizes"]:
        with torch.no_grad():
            y = model(_input(model, size))
        h, w = model.output_size(size)
        assert tuple(y.shape) == (2, model.config.out_channels, h, w), (preset["name"], size)
        assert torch.isfinite(y).all()


def test_an_illegal_size_is_refused_in_one_line(preset):
    model = preset["model"]
    illegal = next((n for n in range(33, 200) if model.legal_sizes(n)[0] != n), None)
    if illegal is None:  # the up-sampled map is padded to its skip: every size is legal
        assert model.config.merge == "pad" and preset["sizes"][0] == (37, 45)
        return
    with pytest.raises(UnetkitError, match=f"input height {illegal} is not legal") as info:
        model.check_input((illegal, preset["sizes"][0][1]))
    assert "\n" not in str(info.value)


def test_checkpoint_round_trip_gives_identical_outputs(preset):
    rebuilt, ckpt = load_model(preset["path"], "cpu")
    assert ckpt.model_config == preset["model"].config and ckpt.preset == preset["name"]
    for size in preset["sizes"]:
        x = _input(preset["model"], size)
        with torch.no_grad():
            assert torch.equal(preset["model"](x), rebuilt(x)), (preset["name"], size)


def test_onnx_export_has_the_same_logits(preset, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(preset["path"], "onnx", out, check=False)  # compared here instead
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = preset["model"]
    for size in preset["sizes"]:  # the export's sample size and another one: dynamic axes
        x = _input(model, size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape, (preset["name"], size)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=preset["name"])
