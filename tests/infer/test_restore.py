"""Image-to-image models (restore / x3): train on an image-only folder, predict images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import load_checkpoint
from unetkit.cli import main
from unetkit.infer.restore import Restorer

TINY = ["--base-width", "4", "--depth", "2", "--batch-size", "2", "--epochs", "1",
        "--steps-per-epoch", "2", "--device", "cpu", "--precision", "fp32"]  # fmt: skip


def _images(root, n=4, size=48):
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"p{i}.png")
    return root


def test_x3_trains_on_images_alone_and_predicts_three_times_larger(tmp_path, capsys):
    photos = _images(tmp_path / "photos")
    run = tmp_path / "run"
    assert main(["train", str(photos), "-o", str(run), "--preset", "x3", "--patch-size", "24",
                 "--val-stems", "p3", *TINY]) == 0  # fmt: skip
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.task == "regression" and ckpt.model_config.scale == 3
    assert ckpt.train_state["best_metric"] == "val_loss"
    assert main(["predict", str(run / "best.pt"), str(photos / "p0.png"), "-o",
                 str(tmp_path / "out")]) == 0  # fmt: skip
    assert "1 restored" in capsys.readouterr().out
    out = np.asarray(Image.open(tmp_path / "out" / "p0.png"))
    assert out.shape == (144, 144, 3) and out.dtype == np.uint8


def test_restore_matches_the_network_denormalised(tmp_path):
    photos = _images(tmp_path / "photos", n=3, size=40)
    run = tmp_path / "run"
    assert main(["train", str(photos), "-o", str(run), "--preset", "restore", "--patch-size",
                 "32", "--val-stems", "p2", *TINY]) == 0  # fmt: skip
    restorer = Restorer.from_checkpoint(run / "last.pt", device="cpu", precision="fp32")
    image = np.asarray(Image.open(photos / "p0.png"))
    got = restorer.restore(image)
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = restorer.model.forward_any(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert got.shape == image.shape
    assert np.abs(got.astype(int) - np.rint(want * 255).astype(int)).max() <= 1


def _restorer(tiny_model, tiny_checkpoint, tmp_path, name: str, **tiling) -> Restorer:
    from unetkit import DataConfig, save_checkpoint

    model = tiny_model(name)
    pre = DataConfig(channels=3, size=(32, 32), normalize="fixed", mean=(0.5,), std=(0.25,))
    ckpt = tiny_checkpoint(model, classes=["image"], preprocessing=pre, task="regression")
    return Restorer.from_checkpoint(
        save_checkpoint(ckpt, tmp_path / f"{name}.pt"), "cpu", "fp32", **tiling
    )


@pytest.mark.parametrize("name", ["restore", "x3"])
def test_restore_runs_tile_by_tile_like_predict(tiny_model, tiny_checkpoint, tmp_path, name):
    """Memory no longer grows with the image: the network sees tiles of the training size."""
    restorer = _restorer(tiny_model, tiny_checkpoint, tmp_path, name)
    seen = []
    restorer.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-2:]))
    image = np.random.default_rng(0).random((100, 130, 3)).astype(np.float32)
    out = restorer.restore(image)
    s = restorer.model.config.scale
    assert out.shape == (100 * s, 130 * s, 3) and out.dtype == np.float32
    assert len(seen) > 1 and max(max(shape) for shape in seen) <= 32, seen
    # one tile as large as the image: the whole image at once, as before (forward_any)
    whole = _restorer(tiny_model, tiny_checkpoint, tmp_path, name, tile=None).restore(image)
    with torch.inference_mode():
        x = (torch.from_numpy(image).permute(2, 0, 1)[None] - 0.5) / 0.25
        y = restorer.model.forward_any(x)[0] * 0.25 + 0.5
    expected = y.clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    assert np.abs(out - whole).mean() < 0.05  # tiles blend to nearly the same image
