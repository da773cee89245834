"""Checkpoints: self-describing, safe to load, atomic to save."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from unetkit import DataConfig, UnetkitError, load_checkpoint, load_model
from unetkit.checkpoint import save_checkpoint, unwrap


@pytest.fixture
def ckpt_of(tiny_checkpoint):
    """``ckpt_of(model, **kw)``: a 3-class letterbox checkpoint of ``model``."""

    def make(model, **kw):
        return tiny_checkpoint(
            model,
            palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]],
            preprocessing=DataConfig(channels=3, resize="letterbox", size=(64, 64)),
            preset="milesial",
            **kw,
        )

    return make


@pytest.fixture
def model(tiny_model):
    m = tiny_model(out_channels=3).train()
    m(torch.randn(2, 3, 16, 16))  # move BN running stats away from their defaults
    return m.eval()


def test_round_trip_gives_identical_logits(tmp_path, model, ckpt_of):
    path = save_checkpoint(ckpt_of(model), tmp_path / "m.pt")
    rebuilt, ckpt = load_model(path)
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert ckpt.classes == ["background", "cell", "nucleus"]
    assert ckpt.palette[1] == [128, 0, 0]
    assert ckpt.preprocessing.resize == "letterbox"
    assert ckpt.preprocessing.size == (64, 64)
    assert ckpt.model_config == model.config
    assert not rebuilt.training


def test_checkpoint_is_plain_data(tmp_path, model, ckpt_of):
    path = save_checkpoint(ckpt_of(model, train_state={"epoch": 3, "step": 30}), tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    assert data["format"] == "unetkit-checkpoint"
    assert data["format_version"] == 1
    assert data["train_state"] == {"epoch": 3, "step": 30}
    assert load_checkpoint(path).train_state["epoch"] == 3


def test_unwraps_compiled_and_ddp_wrappers(model, ckpt_of):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert unwrap(Wrapper(torch.nn.DataParallel(model))) is model
    keys = ckpt_of(torch.nn.DataParallel(model)).state_dict.keys()
    assert not any(k.startswith("module.") for k in keys)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "unetkit-checkpoint", "payload": _Evil(marker)}, path)
    with pytest.raises(UnetkitError, match=r"evil\.pt: refused: not a plain-data checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    path.write_bytes(pickle.dumps(_Evil(tmp_path / "x")))
    with pytest.raises(UnetkitError, match="obj.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "x").exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(UnetkitError, match="not a unetkit checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UnetkitError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(UnetkitError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_interrupted_save_leaves_previous_file_intact(tmp_path, model, monkeypatch, ckpt_of):
    path = save_checkpoint(ckpt_of(model, train_state={"epoch": 1}), tmp_path / "last.pt")
    before = path.read_bytes()

    def crash(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C or the process being killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt_of(model, train_state={"epoch": 2}), path)
    assert path.read_bytes() == before
    assert load_checkpoint(path).train_state == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_non_finite_weights_are_never_saved(tmp_path, model, ckpt_of):
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(UnetkitError, match="non-finite"):
        save_checkpoint(ckpt_of(model), tmp_path / "nan.pt")
    assert not list(tmp_path.iterdir())


def test_future_format_version_refused(tmp_path, model, ckpt_of):
    path = save_checkpoint(ckpt_of(model), tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    torch.save(data, path)
    with pytest.raises(UnetkitError, match="format version 99 is not supported"):
        load_checkpoint(path)
