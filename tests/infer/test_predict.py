"""Predictor and predict_paths: strategies, TTA, thresholds, ONNX, output files, the CLI."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

from hand_wired import (
    CLASSES,
    LEVELS,
    NORM,
    PALETTE,
    RAYS,
    cells,
    distance_checkpoint,
    instance_checkpoint,
    load_predictor,
    offsets_checkpoint,
    offsets_image,
    rays_checkpoint,
    rays_image,
    two_cell_images,
)
from unetkit import DataConfig, PredictConfig, build_model, make_checkpoint, save_checkpoint
from unetkit.cli import main
from unetkit.data.imageio import read_image, read_mask
from unetkit.data.labelme import load_labelme
from unetkit.data.rasterize import rasterize
from unetkit.device import cpu_has_bf16
from unetkit.errors import UnetkitError
from unetkit.files import TEMP_TAG
from unetkit.infer import Predictor, mask_to_labelme, predict_paths
from unetkit.progress import progress


def _truth(image: np.ndarray) -> np.ndarray:
    """The class of every pixel for the ``grey_level_model`` (conftest)."""
    grey = image.astype(np.float64) / 255
    return (grey > 0.3).astype(np.int64) + (grey > 0.7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, grey_level_model) -> dict:
    """Checkpoints of the hand-wired model: random-crop and letterbox trained, and binary."""
    model = grey_level_model()
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, resize in (("crop", "random-crop"), ("letterbox", "letterbox")):
        pre = DataConfig(channels=1, resize=resize, size=(32, 32), **NORM)
        ckpt = make_checkpoint(model, classes=CLASSES, palette=PALETTE, preprocessing=pre)
        paths[name] = save_checkpoint(ckpt, folder / f"{name}.pt")
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), **NORM)
    ckpt = make_checkpoint(
        grey_level_model(1), classes=["background", "white"], palette=PALETTE[::2],
        preprocessing=pre, task="binary",
    )  # fmt: skip
    paths["binary"] = save_checkpoint(ckpt, folder / "binary.pt")
    return {"model": model, **paths}


def _scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with a white and a grey square: (H, W) uint8 image and its true mask."""
    mask = np.zeros((h, w), np.int64)
    mask[h // 8 : h // 2, w // 8 : w // 2] = 2
    mask[h // 2 + 2 : h - 3, w // 2 + 2 : w - 3] = 1
    image = np.rint(255 * np.asarray(LEVELS)[mask]).astype(np.uint8)
    return image, mask


# -- Predictor --------------------------------------------------------------------------------
def test_full_strategy_is_the_network_itself(trained):
    """At a legal size ``full`` is softmax(model((x / 255 - mean) / std)), nothing else."""
    image = np.random.default_rng(0).integers(0, 256, (32, 48), dtype=np.uint8)
    x = (torch.from_numpy(image).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = torch.softmax(trained["model"](x[None, None]), 1)[0].numpy()
    probs = load_predictor(trained["crop"], strategy="full").predict_proba(image)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


@pytest.mark.parametrize("strategy", ["full", "tile", "letterbox", "resize", "auto"])
def test_every_strategy_finds_the_squares(trained, strategy):
    image, truth = _scene(96, 80)
    predictor = load_predictor(trained["crop"], strategy=strategy, tile=(32, 32))
    mask = predictor.predict(image)
    assert mask.shape == truth.shape and mask.dtype == np.int64
    if strategy in ("letterbox", "resize"):  # interpolated twice: square borders may move
        assert (mask == truth).mean() > 0.97
    else:
        np.testing.assert_array_equal(mask, truth)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (31, 45), (70, 130)])
def test_any_size_gives_masks_and_probabilities_of_that_size(trained, size):
    grey = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
    predictor = load_predictor(trained["crop"])
    probs, mask = predictor.predict_proba(grey), predictor.predict(grey)
    assert probs.shape == (3, *size) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(mask, probs.argmax(0))
    np.testing.assert_array_equal(mask, _truth(grey))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # converted to the model's one channel
    np.testing.assert_array_equal(predictor.predict(rgb), mask)


def test_auto_strategy_follows_the_training_preprocessing(trained):
    crop = load_predictor(trained["crop"])
    assert [crop.strategy_for(s) for s in [(32, 32), (20, 5), (33, 32), (32, 400)]] == [
        "full", "full", "tile", "tile",
    ]  # fmt: skip
    letterboxed = load_predictor(trained["letterbox"])
    assert {letterboxed.strategy_for(s) for s in [(10, 10), (500, 300)]} == {"letterbox"}
    fixed = load_predictor(trained["crop"], strategy="resize")
    assert fixed.strategy_for((500, 300)) == "resize"


def test_flip_tta_is_the_mean_of_the_flipped_predictions(trained):
    image = np.random.default_rng(2).integers(0, 256, (32, 48), dtype=np.uint8)
    plain = load_predictor(trained["crop"], strategy="full")
    expected = np.mean(
        [
            plain.predict_proba(image),
            plain.predict_proba(image[:, ::-1])[:, :, ::-1],
            plain.predict_proba(image[::-1])[:, ::-1],
            plain.predict_proba(image[::-1, ::-1])[:, ::-1, ::-1],
        ],
        axis=0,
    )
    got = load_predictor(trained["crop"], strategy="full", tta=True).predict_proba(image)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_binary_models_threshold_the_foreground(trained):
    image, truth = _scene(64, 64)
    image[truth == 1] = 26  # no grey square: background and white only
    predictor = load_predictor(trained["binary"])
    probs = predictor.predict_proba(image)
    assert probs.shape == (2, 64, 64)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    for threshold in (0.2, 0.5, 0.9):
        predictor.config.threshold = threshold
        np.testing.assert_array_equal(predictor.predict(image), probs[1] > threshold)
    predictor.config.threshold = 0.5
    np.testing.assert_array_equal(predictor.predict(image), truth == 2)


def test_onnx_predictor_matches_the_checkpoint(trained, tmp_path):
    from unetkit.export import export_model

    onnx_path = tmp_path / "model.onnx"
    export_model(trained["crop"], "onnx", onnx_path)
    image, _ = _scene(70, 90)
    config = PredictConfig(strategy="tile", tile=(32, 32))
    from_onnx = Predictor.from_onnx(onnx_path, config)
    assert from_onnx.classes == CLASSES and from_onnx.palette == PALETTE
    reference = load_predictor(trained["crop"], strategy="tile", tile=(32, 32)).predict_proba(image)
    np.testing.assert_allclose(from_onnx.predict_proba(image), reference, atol=1e-5)


@pytest.mark.skipif(not cpu_has_bf16(), reason="no native bf16 on this CPU")
def test_bf16_autocast_agrees_with_fp32(trained):
    image, _ = _scene(64, 64)
    fast = Predictor.from_checkpoint(trained["crop"], PredictConfig(precision="bf16"), "cpu")
    assert fast.network.precision == "bf16"
    assert (fast.predict(image) == load_predictor(trained["crop"]).predict(image)).mean() > 0.99


# -- labelme polygons -----------------------------------------------------------------------------
def test_labelme_polygons_round_trip_through_the_labelme_reader(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[2:7, 3:9] = 1  # a 5x6 rectangle
    yy, xx = np.mgrid[:40, :50]
    mask[(yy - 25) ** 2 + (xx - 30) ** 2 <= 64] = 2  # a disk of radius 8
    mask[35, 45] = 1  # one pixel: no polygon (fewer than 3 points)
    doc = mask_to_labelme(mask, ["bg", "box", "disk"], "../img.png")
    assert (doc["version"], doc["imageData"], doc["imagePath"]) == ("5.4.1", None, "../img.png")
    assert (doc["imageHeight"], doc["imageWidth"], doc["flags"]) == (40, 50, {})
    assert [s["label"] for s in doc["shapes"]] == ["box", "disk"]
    assert {tuple(p) for p in doc["shapes"][0]["points"]} == {(3, 2), (3, 6), (8, 6), (8, 2)}
    assert all(s["shape_type"] == "polygon" and s["group_id"] is None for s in doc["shapes"])
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(doc))
    parsed = load_labelme(path)
    back = rasterize(parsed.shapes, (40, 50), {"box": 1, "disk": 2})
    expected = mask.copy()
    expected[35, 45] = 0
    np.testing.assert_array_equal(back, expected)
    big_only = mask_to_labelme(mask, ["bg", "box", "disk"], "x.png", min_area=100)
    assert [s["label"] for s in big_only["shapes"]] == ["disk"]


# -- predict_paths and the CLI ---------------------------------------------------------------------
@pytest.fixture()
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    grey, _ = _scene(40, 50)
    Image.fromarray(grey).save(folder / "a.png")
    rgb, _ = _scene(70, 30)
    Image.fromarray(np.repeat(rgb[:, :, None], 3, axis=2)).save(folder / "b.png")
    return folder


def test_predict_paths_writes_every_output_at_the_input_size(trained, inputs, tmp_path):
    out = tmp_path / "out"
    predictor = load_predictor(trained["crop"])
    report = predict_paths(predictor, [inputs], out, save_probs=True, labelme=True, progress=False)
    assert [p.name for p in report.written] == ["a.png", "b.png"] and not report.failed
    for name, (h, w) in (("a", (40, 50)), ("b", (70, 30))):
        image = read_image(inputs / f"{name}.png", channels=1)
        mask = read_mask(out / f"{name}.png")
        assert Image.open(out / f"{name}.png").mode == "P"  # palette PNG of class indices
        np.testing.assert_array_equal(mask, predictor.predict(image))
        color = np.asarray(Image.open(out / f"{name}_color.png"))
        np.testing.assert_array_equal(color, np.asarray(PALETTE, np.uint8)[mask])
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
        assert overlay.shape == (h, w, 3)  # the input's size: no legend strip by default
        probs = np.load(out / f"{name}_probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (3, h, w)
        assert (probs.argmax(0) == mask).mean() > 0.99
        doc = json.loads((out / f"{name}.json").read_text())
        assert (doc["imageHeight"], doc["imageWidth"]) == (h, w)
        assert (out / doc["imagePath"]).resolve() == (inputs / f"{name}.png").resolve()
        assert {s["label"] for s in doc["shapes"]} <= set(CLASSES[1:])
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    first = read_mask(out / "a.png")
    assert [int(rows[0][f"{c}_pixels"]) for c in CLASSES] == np.bincount(
        first.ravel(), minlength=3
    ).tolist()
    assert rows[0]["classes_present"] == ";".join(
        c for i, c in enumerate(CLASSES) if (first == i).any()
    )
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary files


def test_a_corrupt_input_is_skipped_and_the_rest_finish(trained, inputs, tmp_path, caplog):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out = tmp_path / "out"
    report = predict_paths(load_predictor(trained["crop"]), [inputs], out, progress=False)
    assert [p.name for p, _ in report.failed] == ["broken.png"]
    assert "broken.png" in report.failed[0][1] and "\n" not in report.failed[0][1]
    assert (out / "a.png").is_file() and (out / "b_overlay.png").is_file()
    assert not (out / "broken.png").exists()
    code = main(["predict", str(trained["crop"]), str(inputs), "-o", str(out), "--no-progress"])
    assert code == 2
    (inputs / "broken.png").unlink()
    pattern, out2 = str(inputs / "*.png"), str(tmp_path / "o2")
    options = ["--no-progress", "--strategy", "tile", "--tile", "32x48", "--labelme"]
    code = main(["predict", str(trained["crop"]), pattern, "-o", out2, *options])
    assert code == 0 and (tmp_path / "o2" / "b.json").is_file()


def test_skip_existing_leaves_finished_outputs_alone(trained, inputs, tmp_path):
    out = tmp_path / "out"
    predictor = load_predictor(trained["crop"])
    predict_paths(predictor, [inputs / "a.png", inputs / "b.png"], out, progress=False)
    os.utime(out / "a.png", (1, 1))
    report = predict_paths(predictor, [inputs], out, skip_existing=True, progress=False)
    assert [p.name for p in report.skipped] == ["a.png", "b.png"] and not report.written
    assert os.stat(out / "a.png").st_mtime == 1
    assert len(report.rows) == 2  # still summarised


def test_bad_cli_input_is_one_line_and_exit_2(trained, tmp_path, capsys):
    model, out = str(trained["crop"]), str(tmp_path / "o")
    assert main(["predict", model, str(tmp_path / "nothing*.png"), "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no images found" in err and len(err.splitlines()) == 1
    assert main(["predict", model, str(tmp_path), "-o", out, "--tile", "abc"]) == 2
    assert "--tile must be N or HxW" in capsys.readouterr().err


def test_prediction_never_imports_training():
    """The checkpoint is the only hand-over: ``unetkit.infer`` works without ``unetkit.train``."""
    import subprocess
    import sys

    code = (
        "import sys, unetkit.infer, unetkit.export; "
        "print(any(m.startswith('unetkit.train') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_config_device_is_used_unless_a_device_is_given(trained, monkeypatch):
    """Bug 9.7: ``from_checkpoint(path, config=PredictConfig(device=...))`` ignored it."""
    from unetkit.infer import predict as predict_module

    seen = []
    real = predict_module.load_torch

    def spy(path, device="auto", precision="auto", **kwargs):
        seen.append(str(device))
        return real(path, "cpu", precision, **kwargs)

    monkeypatch.setattr(predict_module, "load_torch", spy)
    path = trained["crop"]
    Predictor.from_checkpoint(path, config=PredictConfig(device="cuda:7"))
    Predictor.load(path, config=PredictConfig(device="cuda:6"))
    Predictor.from_checkpoint(path, config=PredictConfig(device="cuda:7"), device="cpu")
    assert seen == ["cuda:7", "cuda:6", "cpu"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--blend", "linear"], "--blend: blend must be one of gaussian, constant; got 'linear'"),
        (["--overlap", "1.5"], "--overlap: overlap must be in [0, 1); got 1.5"),
        (["--strategy", "tiles"], "--strategy: strategy must be one of auto, full, letterbox"),
        (["--precision", "fp8"], "--precision: precision must be one of auto, fp32, bf16, fp16"),
        (["--threshold", "2"], "--threshold: threshold must be in [0, 1]; got 2.0"),
        (["--batch-size", "-1"], "--batch-size: batch_size must be >= 0; got -1"),
    ],
)
def test_bad_predict_flags_are_reported_once_up_front(
    trained, inputs, tmp_path, capsys, caplog, flags, expected
):
    for i in range(5):  # more images: a per-image report would say it 7 times
        Image.fromarray(_scene(40, 50)[0]).save(inputs / f"c{i}.png")
    out = tmp_path / "out"
    argv = ["predict", str(trained["crop"]), str(inputs), "-o", str(out), "--no-progress"]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}")
    assert len(err.splitlines()) == 1 and "skipped" not in err and "Traceback" not in err
    assert "skipped" not in caplog.text
    assert not out.exists()  # refused before any output


# -- noise: one summary, plain progress lines off a terminal, no stale temporary files ----------
def test_folder_prediction_summary_is_said_once(trained, inputs, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    assert (
        main(["predict", str(trained["crop"]), str(inputs), "-o", str(out), "--no-progress"]) == 0
    )
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"2 predicted, 0 skipped (existing), 0 failed -> {out}"]
    assert "predicted" not in captured.err and "predicted" not in caplog.text


def test_progress_off_a_terminal_is_plain_lines():
    stream = io.StringIO()  # not a terminal, like a log file
    assert list(progress(range(25), desc="predict", unit="img", stream=stream)) == list(range(25))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10  # one line every 10 %
    assert lines[0].startswith("predict: 3/25 img (12%)") and lines[-1].startswith(
        "predict: 25/25 img (100%)"
    )
    stream = io.StringIO()
    with progress(total=40, desc="epoch 3", unit="batch", leave=False, stream=stream) as bar:
        for _ in range(40):
            bar.set_postfix(loss="0.1234")
            bar.update(1)
    assert stream.getvalue() == ""  # transient bars say nothing there: the epoch has its line
    stream = io.StringIO()
    list(progress(range(5), desc="x", disable=True, stream=stream))
    assert stream.getvalue() == ""


def test_progress_on_a_terminal_is_tqdm():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = progress(range(3), desc="predict", unit="img", stream=stream)
    assert isinstance(bar, tqdm)
    list(bar)
    assert "\r" in stream.getvalue()


def test_no_carriage_returns_in_a_log_of_folder_prediction(trained, inputs, tmp_path):
    """The console script with progress on and stderr a file: plain lines, one summary."""
    for i in range(10):
        Image.fromarray(_scene(40, 50)[0]).save(inputs / f"c{i}.png")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "unetkit", "predict", str(trained["crop"]), str(inputs)]
    proc = subprocess.run([*args, "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("predict: 12/12 img (100%)")
    assert (proc.stdout + proc.stderr).count("predicted") == 1


def crossing_tiles(truth: np.ndarray, step: int = 24) -> int:
    """How many objects of ``truth`` span more than one column of tiles ``step`` px apart (the
    32 px tiles with overlap 0.25 these tests use): how much a whole-vs-tiled test means."""
    return sum(
        len(np.unique(np.argwhere(truth == i)[:, 1] // step)) > 1
        for i in range(1, int(truth.max()) + 1)
    )


def test_folder_prediction_removes_its_stale_temporary_files(trained, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a_overlay{TEMP_TAG}k3j4h5g6.png"  # left by a killed run
    stale.write_bytes(b"")
    os.utime(stale, (1, 1))
    mine = out / ".a_overlay.notes.png"  # not our naming: never touched
    mine.write_bytes(b"keep")
    predict_paths(load_predictor(trained["crop"]), [inputs], out, progress=False)
    assert not stale.exists() and mine.read_bytes() == b"keep"


def test_restoring_a_folder_removes_its_stale_temporary_files(inputs, tmp_path):
    from unetkit.infer.restore import Restorer, restore_paths

    model = build_model("restore", base_width=4, depth=2, in_channels=1, out_channels=1)
    pre = DataConfig(channels=1, size=(32, 32))
    ckpt = make_checkpoint(model, classes=["image"], palette=[[0, 0, 0]], preprocessing=pre,
                           task="regression", preset="restore")  # fmt: skip
    restorer = Restorer.from_checkpoint(save_checkpoint(ckpt, tmp_path / "r.pt"), "cpu", "fp32")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a{TEMP_TAG}abcdefgh.png"
    stale.write_bytes(b"")
    os.utime(stale, (1, 1))
    report = restore_paths(restorer, [inputs / "a.png"], out, progress=False)
    assert [p.name for p in report.written] == ["a.png"] and not stale.exists()


# -- instance models --------------------------------------------------------------------------


def test_instance_objects_are_identical_whole_and_tiled(tmp_path, grey_level_model):
    """Issue 12.4: one object per cell with one id whether the image is predicted whole or in
    32 px tiles; the cells touch and straddle every tile border."""
    from unetkit.objects.labels import renumber

    path = instance_checkpoint(tmp_path, grey_level_model)
    image, truth = cells(100, 150)
    whole = load_predictor(path, strategy="full")
    tiled = load_predictor(path, strategy="tile", tile=(32, 32), overlap=0.25)
    mask_w, ids_w = whole.predict_objects(image)
    mask_t, ids_t = tiled.predict_objects(image)
    assert ids_w.max() == truth.max() == 8 * 12
    assert (ids_w == renumber(truth)).all()  # touching cells apart, each exactly itself
    assert (ids_t == ids_w).all() and (mask_t == mask_w).all()
    assert crossing_tiles(truth) > 20  # the test means something: many cells cross tile borders
    assert set(np.unique(mask_w)) == {0, 1}  # boundary folded into the object class
    assert (whole.predict_mask(image) == (truth > 0)).all()


def test_distance_head_objects_are_identical_whole_and_tiled(tmp_path, grey_level_model):
    """Touching cells that straddle every tile border, told apart by the distance channel
    alone (no boundary in the class maps): the same ids whole and in 32 px tiles."""
    from unetkit.data.targets import object_distance
    from unetkit.objects.labels import connected_objects, renumber

    path = distance_checkpoint(tmp_path, grey_level_model)
    _, truth = cells(100, 150)
    level = np.where(truth > 0, 0.5 + 0.5 * object_distance(truth), LEVELS[0])
    image = np.rint(255 * level).astype(np.uint8)
    whole = load_predictor(path, strategy="full")
    tiled = load_predictor(path, strategy="tile", tile=(32, 32), overlap=0.25)
    assert whole.head == "distance"
    probs = whole.predict_proba(image)
    assert probs.shape[0] == 3 and np.allclose(probs[:2].sum(0), 1, atol=1e-5)
    assert connected_objects(probs[1] > 0.5).max() == 1  # the classes alone: one object
    mask_w, ids_w = whole.predict_objects(image)
    mask_t, ids_t = tiled.predict_objects(image)
    assert ids_w.max() == truth.max() == 8 * 12
    assert (ids_w == renumber(truth)).all()
    assert (ids_t == ids_w).all() and (mask_t == mask_w).all()
    assert crossing_tiles(truth) > 20
    assert (whole.predict_mask(image) == (truth > 0)).all()


def assert_same_objects_whole_and_tiled(whole, path, image, truth, min_map: float) -> None:
    """``whole`` (a full-image predictor of checkpoint ``path``) finds every one of the 42
    true cells (AP@0.5 1, mean AP above ``min_map``); in 32 px tiles the ids and mask are the
    same, with more than 10 cells crossing a tile border; the mask is the cells."""
    from unetkit.objects.metrics import ObjectTally

    mask_w, ids_w = whole.predict_objects(image)
    assert ids_w.max() == truth.max() == 6 * 7
    tally = ObjectTally()
    tally.add(ids_w, truth)
    assert tally.summary()["ap_50"] == 1.0 and tally.summary()["map"] > min_map
    tiled = load_predictor(path, strategy="tile", tile=(32, 32), overlap=0.25)
    mask_t, ids_t = tiled.predict_objects(image)
    assert (ids_t == ids_w).all() and (mask_t == mask_w).all()
    assert crossing_tiles(truth) > 10
    assert (whole.predict_mask(image) == (truth > 0)).all()


def test_rays_head_objects_are_identical_whole_and_tiled(tmp_path):
    """Touching square cells that straddle every tile border, told apart by the rays head's
    polygons: the same ids whole and in 32 px tiles (the maps are stitched, then the polygons
    suppressed once)."""

    path = rays_checkpoint(tmp_path)
    _, truth = cells(76, 100)
    image = rays_image(truth)
    whole = load_predictor(path, strategy="full")
    assert whole.rays == RAYS
    probs = whole.predict_proba(image)
    assert probs.shape[0] == 3 + RAYS and np.allclose(probs[:2].sum(0), 1, atol=1e-5)
    from unetkit.data.rays import object_rays

    assert np.allclose(probs[3:], object_rays(truth, RAYS), atol=1e-3)  # rays in pixels
    # each cell found, nearly to the pixel (polygons of 8 rays)
    assert_same_objects_whole_and_tiled(whole, path, image, truth, min_map=0.95)
    with pytest.raises(UnetkitError, match="rays-head"):
        load_predictor(path, strategy="resize").predict(image)

    class Region:  # an image read by region: bands cannot give exact ids, so none are made
        path, shape, height, width = "big.tif", (76, 100, 2 + RAYS), 76, 100

    with pytest.raises(UnetkitError, match="whole image's probabilities"):
        next(whole.iter_mask_bands(Region()))


def test_rays_head_tta_mirrors_the_rays():
    """A prediction of a flipped image, flipped back, has its rays in mirrored directions:
    ``mirror_rays`` turns them into the rays of the image itself."""
    from unetkit.data.rays import object_rays
    from unetkit.infer.heads import mirror_rays

    rng = np.random.default_rng(1)
    truth = np.zeros((30, 40), np.int32)
    for k in range(1, 5):
        top, left = rng.integers(0, 22), rng.integers(0, 32)
        truth[top : top + rng.integers(3, 9), left : left + rng.integers(3, 9)] = k
    rays = torch.from_numpy(object_rays(truth, RAYS))[None]
    for dims in ((-1,), (-2,), (-2, -1)):
        flipped = object_rays(np.flip(truth, [d + 2 for d in dims]).copy(), RAYS)
        back = torch.from_numpy(flipped)[None].flip(dims)
        assert torch.allclose(mirror_rays(back, dims, RAYS), rays)


def test_offsets_head_tta_negates_the_flipped_axes():
    """A prediction of a flipped image, flipped back, has its offsets pointing the mirrored
    way: ``unflip_head`` negates x for a flip of the columns and y for one of the rows."""
    from unetkit.data.offsets import object_offsets
    from unetkit.infer.heads import unflip_head

    _, truth = cells(30, 40, step=7)
    probs = torch.cat([torch.rand(1, 3, 30, 40), torch.from_numpy(object_offsets(truth))[None]], 1)
    for dims in ((-1,), (-2,), (-2, -1)):
        flipped = object_offsets(np.flip(truth, [d + 2 for d in dims]).copy())
        back = torch.cat([probs[:, :3].flip(dims), torch.from_numpy(flipped)[None]], 1).flip(dims)
        assert torch.allclose(unflip_head(back, dims, "offsets"), probs, atol=1e-6)


def test_offsets_head_objects_are_identical_whole_and_tiled(tmp_path):
    """Touching square cells with no boundary between them (every object pixel the same grey),
    straddling every tile border: the offsets alone tell them apart, with the same ids whole
    and in 32 px tiles (the maps are stitched, then separated once)."""
    from unetkit.config import ObjectConfig
    from unetkit.objects.postprocess import separate_objects

    path = offsets_checkpoint(tmp_path)
    _, truth = cells(76, 100)
    image = offsets_image(truth)
    whole = load_predictor(path, strategy="full")
    assert whole.offsets == 2
    probs = whole.predict_proba(image)
    assert probs.shape == (5, 76, 100) and np.allclose(probs[:3].sum(0), 1, atol=1e-5)
    from unetkit.data.offsets import object_offsets

    assert np.allclose(probs[3:], object_offsets(truth), atol=1e-5)
    # without the offsets (the boundary head's post-processing) the grid is one object
    assert separate_objects(probs[:3], ObjectConfig(min_size=0))[1].max() == 1
    assert_same_objects_whole_and_tiled(whole, path, image, truth, min_map=0.9)


def test_instance_post_processing_overrides(tmp_path, grey_level_model):
    path = instance_checkpoint(tmp_path, grey_level_model)
    image, truth = cells(60, 60)
    assert load_predictor(path).objects_config.min_size == 0
    big = load_predictor(path, min_size=1000)
    assert big.objects_config.min_size == 1000
    assert big.predict_objects(image)[1].max() == 0
    assert load_predictor(path).predict_objects(image)[1].max() == truth.max()
    assert load_predictor(path).objects_config.min_score == 0.8  # the model's
    assert load_predictor(path, min_score=1.0).predict_objects(image)[1].max() == 0


def test_instance_model_writes_object_outputs(tmp_path, grey_level_model):
    """Issue 12.5: ids, object table, object overlay, labelme / GeoJSON per object, coco.json
    for the folder, object counts in summary.csv; all consistent with each other."""
    from unetkit.data.instances import read_instances

    path = instance_checkpoint(tmp_path, grey_level_model)
    inputs, image, truth = two_cell_images(tmp_path)
    out = tmp_path / "out"
    predict_paths(load_predictor(path), [inputs], out, labelme=True, geojson=True, coco=True,
                  pixel_size=0.5, progress=False)  # fmt: skip
    ids = read_instances(out / "a_instances.png")
    assert ids.max() == truth.max() and (ids == renumber_ids(truth)).all()
    with open(out / "a_objects.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == truth.max()
    first = rows[0]
    assert first["class"] == "cell" and float(first["area_um2"]) == pytest.approx(144 * 0.25)
    overlay_png = np.asarray(Image.open(out / "a_objects.png"))
    assert overlay_png.shape == (60, 75, 3)
    doc = json.loads((out / "a.json").read_text())
    assert len(doc["shapes"]) == truth.max()
    assert sorted(s["group_id"] for s in doc["shapes"]) == list(range(1, truth.max() + 1))
    geo = json.loads((out / "a.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == truth.max()
    coco = json.loads((out / "coco.json").read_text())
    n_b = int(read_instances(out / "b_instances.png").max())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == truth.max() + n_b
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    with open(out / "summary.csv") as fh:
        summary = {r["image"]: r for r in csv.DictReader(fh)}
    assert summary["a.png"]["objects"] == str(truth.max())
    assert summary["b.png"]["objects"] == str(n_b)


def test_semantic_model_objects_on_request(trained, inputs, tmp_path):
    out = tmp_path / "out"
    predict_paths(load_predictor(trained["crop"]), [inputs], out, progress=False)
    assert not list(out.glob("*_instances.png"))  # semantic: masks only by default
    predict_paths(load_predictor(trained["crop"]), [inputs], out, objects=True, progress=False)
    assert list(out.glob("*_instances.png")) and list(out.glob("*_objects.csv"))
    with open(out / "summary.csv") as fh:
        assert "objects" in next(csv.DictReader(fh))


def renumber_ids(ids: np.ndarray) -> np.ndarray:
    from unetkit.objects.labels import renumber

    return renumber(ids)


# -- regions between a boundary class (--objects-between) ------------------------------------
def _membranes(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Four dark cells between 2 px white membranes (a cross); the vertical membrane has a
    weak grey stretch (rows 8-11) that a mask would not call membrane. (image, true mask with
    membrane = 2)."""
    mask = np.zeros((size, size), np.uint8)
    mask[size // 2 - 1 : size // 2 + 1, :] = 2
    mask[:, size // 2 - 1 : size // 2 + 1] = 2
    image = np.where(mask == 2, 250, 40).astype(np.uint8)
    image[8:12, size // 2 - 1 : size // 2 + 1] = 165  # p(white) about 0.35: argmax grey
    return image, mask


def test_objects_between_closes_gaps_that_connected_components_merge(trained):
    from unetkit.metrics import adapted_rand_error, membrane_rand_error
    from unetkit.objects.labels import regions_of

    image, truth = _membranes()
    predictor = load_predictor(trained["crop"], objects_between="white")
    assert predictor.between_class == 2
    mask, regions = predictor.predict_objects(image)
    assert (mask == predictor.predict_mask(image)).all()
    assert regions_of(mask, 2).max() == 3  # the weak stretch joins two cells
    assert regions.min() == 1 and regions.max() == 4  # every pixel in one of four cells
    true_cells = regions_of(truth, 2)
    assert adapted_rand_error(regions, true_cells) == 0.0
    assert membrane_rand_error(mask, truth, membrane=2) > 0.1
    assert load_predictor(trained["crop"], objects_between="2").between_class == 2
    # a seed threshold below the weak stretch's 1 - p joins the two cells through it again
    low = load_predictor(trained["crop"], objects_between="white", seed_threshold=0.5)
    assert low.predict_objects(image)[1].max() == 3
    for name in ("membrane", "7"):
        with pytest.raises(UnetkitError, match="not a class of this model"):
            load_predictor(trained["crop"], objects_between=name)


def test_evaluate_and_predict_objects_between(trained, tmp_path):
    """evaluate --objects-between --rand-error scores the regions against the true cells;
    predict writes them as objects."""
    image, truth = _membranes()
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(image).save(data / "images" / "a.png")
    Image.fromarray(truth).save(data / "masks" / "a.png")
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    common = ["--split", "all", "--precision", "fp32", "--device", "cpu", "--no-progress"]
    out = tmp_path / "report"
    assert main(["evaluate", str(trained["crop"]), str(data), "-o", str(out), *common,
                 "--objects-between", "white", "--rand-error"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapted_rand_error"] == 0.0
    assert metrics["objects"]["ap_50"] == 1.0 and "between" in metrics["objects"]["truth"]
    pred = tmp_path / "pred"
    assert main(["predict", str(trained["crop"]), str(data / "images"), "-o", str(pred),
                 "--objects-between", "white", "--precision", "fp32", "--device", "cpu",
                 "--no-progress"]) == 0  # fmt: skip
    assert np.asarray(Image.open(pred / "a_instances.png")).max() == 4
    with (pred / "a_objects.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("classes", [1, 2, 3, 7, 300])
def test_class_argmax_is_argmax(classes):
    """The fast per-class loop picks what ``argmax(0)`` picks, ties to the lower class."""
    from unetkit.infer.predict import class_argmax

    rng = np.random.default_rng(classes)
    probs = torch.from_numpy(rng.integers(0, 4, (classes, 37, 41)).astype(np.float32))  # ties
    got = class_argmax(probs)
    assert got.dtype == (torch.uint8 if classes <= 256 else torch.int32)
    np.testing.assert_array_equal(got.long().numpy(), probs.argmax(0).numpy())


def test_default_tiling_is_large_tiles_one_at_a_time_on_a_cpu(trained):
    """No --tile / --batch-size: the tiles come from the device and memory, not the 32 px
    training size (whose context and overlap made the network run 3x the pixels)."""
    predictor = load_predictor(trained["crop"])
    side = predictor._tile()[0]
    assert predictor._tile() == (side, side) and side % 16 == 0 and side >= 64
    assert predictor._batch_size == 1
    asked = load_predictor(trained["crop"], tile=(48, 40), batch_size=3)
    assert asked._tile() == (48, 40) and asked._batch_size == 3


def test_summary_csv_is_these_bytes(tmp_path):
    from unetkit.infer.summary_rows import summary_row, write_summary

    row = summary_row("a.png", np.array([[0, 1], [1, 1]], np.uint8), ["bg", "fg"], objects=2)
    write_summary(tmp_path / "summary.csv", [row], ["bg", "fg"], objects=True)
    assert (tmp_path / "summary.csv").read_bytes() == (
        b"image,height,width,objects,classes_present,bg_pixels,fg_pixels\na.png,2,2,2,bg;fg,1,3\n"
    )
