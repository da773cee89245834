"""fit() end to end: the artefacts of a run, resume (bitwise), the time budget, the NaN
guard, the tasks and instance heads, what the CLI leaves to the library."""

from __future__ import annotations

import csv
import importlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training import (
    TINY,
    assert_bitwise_equal,
    make_instance_dataset,
    said_by_train,
    tiny_config,
    tiny_run,
)

import unetkit
from realdata import ISBI
from unetkit import TrainConfig, UnetkitError, load_checkpoint
from unetkit.cli import main
from unetkit.config import DataConfig
from unetkit.train.artifacts import WATCHED


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_two_epochs_write_every_artefact(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(dataset),
                "-o",
                str(run),
                "--epochs",
                "2",
                "--val-stems",
                "04,05",
                "--steps-per-epoch",
                "3",
                *TINY,
            ]
        )
        == 0
    )
    for name in (
        "config.json",
        "last.pt",
        "best.pt",
        "history.csv",
        "curves.png",
        "panels/epoch_0001.png",
        "panels/epoch_0002.png",
    ):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in WATCHED:  # every number of the log line is in the history
        assert rows[-1][key] != "", key
    assert 0.0 <= float(rows[-1]["mean_iou"]) <= 1.0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.classes == ["background", "class1", "class2"]
    assert ckpt.train_state["epoch"] == 2 and ckpt.train_state["step"] == 6
    assert ckpt.model_config.in_channels == 1 and ckpt.model_config.out_channels == 3
    assert ckpt.train_state["data"]["val"] == ["04", "05"]
    best = load_checkpoint(run / "best.pt").train_state
    assert best["best_metric"] == "mean_iou"
    # where the split's images are: `export --int8` calibrates on them
    assert best["data"]["dataset"] == str(Path(dataset).resolve())
    # a non-empty run folder is refused
    assert main(["train", str(dataset), "-o", str(run), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err


def test_python_api_and_time_budget_resume_is_bitwise_equal(dataset, tmp_path):
    full = unetkit.fit(tiny_config(dataset, tmp_path / "full"))
    assert full == tmp_path / "full"
    # stop after the first step (a tiny budget), then resume to the end
    cut = tiny_config(dataset, tmp_path / "cut", time_budget=1e-6)
    unetkit.fit(cut)
    state = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (0, 1, 1)
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    assert load_checkpoint(tmp_path / "cut" / "last.pt").train_state["step"] == 9
    assert_bitwise_equal(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")


def test_sigkill_then_resume_is_bitwise_equal(dataset, tmp_path):
    args = [
        str(dataset),
        "--epochs",
        "4",
        "--steps-per-epoch",
        "4",
        "--val-stems",
        "05",
        "--deterministic",
        *TINY,
    ]
    assert main(["train", *args[:1], "-o", str(tmp_path / "full"), *args[1:]]) == 0
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "unetkit", "train", *args[:1], "-o", str(run), *args[1:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "last.pt").exists():
            state = load_checkpoint(run / "last.pt").train_state
            if state["epoch"] >= 1:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "last.pt").train_state["epoch"]
    assert killed_at < 4, "the run finished before it could be killed"
    assert main(["train", str(dataset), "--resume", str(run)]) == 0
    assert load_checkpoint(run / "last.pt").train_state["epoch"] == 4
    assert_bitwise_equal(tmp_path / "full" / "last.pt", run / "last.pt")


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_is_bitwise_equal(dataset, tmp_path):
    """SIGKILL at random moments (seeded; they land mid-epoch, mid-accumulation, during
    validation and during saves) and ``--resume`` each time: the weights and the training
    history equal those of an uninterrupted run, bitwise. Figures: >= 5 kills survived."""
    import random

    # --save-every 1: a last.pt after every epoch (the auto rule spaces them out by time, and
    # on a loaded machine the kills would then land before much progress was saved)
    args = [str(dataset), "--epochs", "40", "--steps-per-epoch", "4", "--accumulate", "2",
            "--val-stems", "04,05", "--val-every", "1", "--save-every", "1", "--deterministic",
            *TINY]  # fmt: skip
    train = [sys.executable, "-m", "unetkit", "train", args[0]]
    start = time.monotonic()
    subprocess.run([*train, "-o", str(tmp_path / "full"), *args[1:]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    whole = time.monotonic() - start  # start-up included: the moments scale with the machine
    run = tmp_path / "killed"
    rng = random.Random(4)
    kills, rounds = 0, 0
    while rounds < 30:
        rounds += 1
        resume = (run / "last.pt").exists()
        tail = ["--resume", str(run)] if resume else ["-o", str(run), *args[1:]]
        proc = subprocess.Popen(
            [*train, *tail], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # random moments as shares of an uninterrupted run's time, later ones later, so
            # that kills land on a fast machine and a loaded one still lets the run finish
            proc.wait(timeout=whole * (rng.uniform(0.3, 0.55) + 0.03 * rounds))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        break
    print(f"{kills} kills in {rounds} rounds")
    assert kills >= 5, f"only {kills} kills landed"
    assert load_checkpoint(run / "last.pt").train_state["epoch"] == 40
    assert_bitwise_equal(tmp_path / "full" / "last.pt", run / "last.pt")
    history = [
        {k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_min")}
        for row in load_checkpoint(run / "last.pt").train_state["history"]
    ]
    reference = [
        {k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_min")}
        for row in load_checkpoint(tmp_path / "full" / "last.pt").train_state["history"]
    ]
    assert history == reference


def test_time_budget_with_accumulation_stops_only_at_optimizer_steps(dataset, tmp_path):
    """Bug 9.5: a budget stop between micro-steps lost the partial gradients on resume."""
    full = unetkit.fit(tiny_config(dataset, tmp_path / "full", accumulate=2, steps_per_epoch=4))
    cut = tiny_config(dataset, tmp_path / "cut", accumulate=2, steps_per_epoch=4, time_budget=1e-6)
    unetkit.fit(cut)
    state = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert state["step_in_epoch"] % 2 == 0, state["step_in_epoch"]
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    assert_bitwise_equal(full / "last.pt", tmp_path / "cut" / "last.pt")


def test_non_finite_loss_stops_without_checkpoint(dataset, tmp_path, monkeypatch):
    criterion = importlib.import_module("unetkit.train.criterion")
    real = criterion.build_loss

    def nan_loss(*a, **kw):
        inner = real(*a, **kw)
        return lambda out, target, weight=None: inner(out, target, weight) * float("nan")

    monkeypatch.setattr(criterion, "build_loss", nan_loss)
    with pytest.raises(
        UnetkitError,
        match=r"non-finite loss \(nan\) at epoch 1, step 1; batch "
        r"files: \d\d, \d\d",
    ):
        unetkit.fit(tiny_config(dataset, tmp_path / "nan"))
    assert not (tmp_path / "nan" / "last.pt").exists()
    assert not (tmp_path / "nan" / "best.pt").exists()


def test_checkpoints_record_the_split_they_were_trained_with(dataset, tmp_path):
    """Bug 9.8 (training side): best.pt and last.pt both record train / val stems."""
    unetkit.fit(tiny_config(dataset, tmp_path / "run", epochs=1))
    for name in ("best.pt", "last.pt"):
        data = load_checkpoint(tmp_path / "run" / name).train_state["data"]
        assert data["val"] == ["05"] and data["train"] == ["00", "01", "02", "03", "04"], name


def test_weight_map_and_binary_task(dataset, tmp_path):
    root = tmp_path / "bin"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for p in sorted((dataset / "masks").glob("*.png")):
        m = (np.asarray(Image.open(p)) > 0).astype(np.uint8) * 255  # 0/255 masks
        Image.fromarray(m).save(root / "masks" / p.name)
        (root / "images" / p.name).write_bytes((dataset / "images" / p.name).read_bytes())
    cfg = tiny_config(root, tmp_path / "run", epochs=1, task="binary", weight_map=True)
    unetkit.fit(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.task == "binary"
    assert ckpt.model_config.out_channels == 1 and ckpt.model_config.head == "sigmoid"
    assert ckpt.train_state["config"]["loss"] == "bce+dice"


@pytest.mark.slow
@pytest.mark.skipif(not (ISBI / "images").is_dir(), reason="../shared/data/isbi2012 not present")
def test_isbi_real_data_short_run(tmp_path):
    """The real EM data (images/ + masks/, no classes file): a few cheap steps on 64 px crops."""
    run = tmp_path / "isbi"
    args = ["train", str(ISBI), "-o", str(run), "--epochs", "1", "--steps-per-epoch", "2",
            "--val-stems", "29", *TINY[:6], "--patch-size", "64", "--batch-size", "2",
            "--device", "cpu", "--weight-map", "--weight-map-objects", "0"]  # fmt: skip
    assert main(args) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.classes == ["background", "class1"]
    assert ckpt.model_config.in_channels == 1
    assert (
        ckpt.train_state["data"]["val"] == ["29"] and len(ckpt.train_state["data"]["train"]) == 29
    )
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert 0.0 <= float(rows[0]["mean_iou"]) <= 1.0  # scored on the whole 512x512 slice


def test_instance_task_trains_a_boundary_class_and_stores_its_post_processing(tmp_path):
    from unetkit.data.targets import boundary_target
    from unetkit.infer import Predictor

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    code = main(["train", str(data), "-o", str(run), "--task", "instance", "--epochs", "1",
                 "--steps-per-epoch", "2", "--val-stems", "03", *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.task == "instance" and ckpt.classes == ["background", "class1"]
    assert ckpt.model_config.out_channels == 3  # background, object, boundary
    objects = ckpt.extra["objects"]
    # min_size: a fifth of the 10th percentile of the training objects' areas
    from unetkit.data.instances import read_instances

    areas = np.concatenate([np.bincount(read_instances(p).ravel())[1:]
                            for p in sorted((data / "instances").iterdir())[:3]])  # fmt: skip
    assert objects["min_size"] == max(1, round(np.percentile(areas[areas > 0], 10) / 5))
    predictor = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    image = np.asarray(Image.open(data / "images" / "00.png"))
    mask, ids = predictor.predict_objects(image)
    assert mask.shape == ids.shape == image.shape and ((mask > 0) == (ids > 0)).all()
    assert predictor.predict_proba(image).shape[0] == 3
    from unetkit.summary import checkpoint_summary

    shown = checkpoint_summary(run / "best.pt")  # unetkit info: the post-processing it applies
    assert f'"min_size": {objects["min_size"]}' in shown and '"min_score": 0.8' in shown
    # the training target the dataset hands out: the boundary is class 2
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.layout import describe_dataset

    info = describe_dataset(data)
    ds = SegmentationDataset(info, ["00"], DataConfig(resize="none"), boundary_width=1)
    ids00 = read_instances(data / "instances" / "00.png")
    expected = boundary_target((ids00 > 0).astype(np.int64), ids00, 2)
    assert (ds[0]["mask"].numpy() == expected).all()
    cores = SegmentationDataset(info, ["00"], DataConfig(resize="none"), boundary_width=1,
                                boundary_fraction=0.5)  # fmt: skip
    expected = boundary_target((ids00 > 0).astype(np.int64), ids00, 2, 1, fraction=0.5)
    assert (cores[0]["mask"].numpy() == expected).all()
    assert (expected == 2).sum() > (ds[0]["mask"].numpy() == 2).sum()


def test_the_boundary_fraction_reaches_the_training_target(tmp_path, monkeypatch):
    import importlib

    fit_module = importlib.import_module("unetkit.train.fit")  # the package exports fit()
    built = []

    class Recording(fit_module.SegmentationDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(fit_module, "SegmentationDataset", Recording)
    data = make_instance_dataset(tmp_path / "inst")
    code = main(["train", str(data), "-o", str(tmp_path / "run"), "--task", "instance",
                 "--boundary-fraction", "0.5", "--epochs", "1", "--steps-per-epoch", "1",
                 "--val-stems", "03", *TINY])  # fmt: skip
    assert code == 0
    train_set = next(ds for ds in built if ds.train)
    assert train_set.boundary_width == 2 and train_set.boundary_fraction == 0.5
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.extra["objects"]["boundary_fraction"] == 0.5


def test_distance_head_trains_predicts_and_is_stored(tmp_path, monkeypatch):
    """``--instance-head distance``: K classes + a distance channel, end to end."""
    import importlib

    from unetkit.train.head_losses import DistanceHeadLoss

    criterion = importlib.import_module("unetkit.train.criterion")
    factors = []

    class Recording(DistanceHeadLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            factors.append(self.factor)

    monkeypatch.setattr(criterion, "DistanceHeadLoss", Recording)
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.instances import read_instances
    from unetkit.data.layout import describe_dataset
    from unetkit.data.targets import object_distance
    from unetkit.infer import Predictor
    from unetkit.infer.evaluate import evaluate_model

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    code = main(["train", str(data), "-o", str(run), "--task", "instance", "--instance-head",
                 "distance", "--distance-weight", "3", "--epochs", "2", "--steps-per-epoch", "2",
                 "--val-stems", "03", *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.task == "instance" and ckpt.extra["objects"]["head"] == "distance"
    assert ckpt.extra["objects"]["distance_weight"] == 3.0 and factors == [3.0]
    assert ckpt.model_config.out_channels == 3  # background, object, distance
    assert json.loads((run / "config.json").read_text())["objects"]["head"] == "distance"
    predictor = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    image = np.asarray(Image.open(data / "images" / "00.png"))
    probs = predictor.predict_proba(image)
    assert probs.shape[0] == 3 and np.allclose(probs[:2].sum(0), 1, atol=1e-5)
    assert probs[2].min() >= 0 and probs[2].max() <= 1  # a sigmoid, not a softmax class
    mask, ids = predictor.predict_objects(image)
    assert mask.shape == ids.shape == image.shape and ((mask > 0) == (ids > 0)).all()
    assert set(np.unique(mask)) <= {0, 1}
    report = evaluate_model(run / "best.pt", data, tmp_path / "eval", device="cpu", progress=False)
    assert "objects" in report and report["objects"]["ap_50"] is not None
    # the training target: the data's classes (no boundary class) and the distance map
    info = describe_dataset(data)
    ds = SegmentationDataset(info, ["00"], DataConfig(resize="none"), boundary_width=2,
                             instance_head="distance")  # fmt: skip
    ids00 = read_instances(data / "instances" / "00.png")
    item = ds[0]
    assert (item["mask"].numpy() == (ids00 > 0)).all()
    assert np.array_equal(item["distance"].numpy(), object_distance(ids00))
    # a crop takes the same window of the mask and of the distance
    crops = SegmentationDataset(info, ["00"], DataConfig(resize="random-crop", size=(24, 24)),
                                train=True, boundary_width=2, instance_head="distance")  # fmt: skip
    crop = crops[0]
    full = object_distance(ids00)
    windows = [full[y : y + 24, x : x + 24] for y in range(25) for x in range(25)]
    assert any(np.array_equal(crop["distance"].numpy(), w) for w in windows)
    code = main(["train", str(data), "-o", str(tmp_path / "bad"), "--task", "instance",
                 "--instance-head", "stars", *TINY])  # fmt: skip
    assert code == 2


def test_offsets_head_trains_predicts_and_is_stored(tmp_path):
    """``--instance-head offsets``: K classes + boundary + 2 offset channels, end to end; the
    targets the boundary head's plus each crop's window of the whole image's offsets."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.instances import read_instances
    from unetkit.data.layout import describe_dataset
    from unetkit.data.offsets import object_offsets
    from unetkit.data.targets import boundary_target
    from unetkit.infer import Predictor

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    code = main(["train", str(data), "-o", str(run), "--task", "instance", "--instance-head",
                 "offsets", "--offsets-weight", "2", "--epochs", "2", "--steps-per-epoch", "2",
                 "--val-stems", "03", *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.extra["objects"]["head"] == "offsets"
    assert ckpt.extra["objects"]["offsets_weight"] == 2.0
    assert ckpt.model_config.out_channels == 5  # background, object, boundary, x, y
    predictor = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    image = np.asarray(Image.open(data / "images" / "00.png"))
    probs = predictor.predict_proba(image)
    assert probs.shape[0] == 5 and np.allclose(probs[:3].sum(0), 1, atol=1e-5)
    mask, ids = predictor.predict_objects(image)
    assert mask.shape == ids.shape == image.shape and ((mask > 0) == (ids > 0)).all()
    # the training targets: the boundary class in the mask, the offsets beside it
    info = describe_dataset(data)
    ids00 = read_instances(data / "instances" / "00.png")
    ds = SegmentationDataset(info, ["00"], DataConfig(resize="none"), boundary_width=2,
                             instance_head="offsets")  # fmt: skip
    item = ds[0]
    expected = boundary_target((ids00 > 0).astype(np.int64), ids00, 2, 2)
    assert (item["mask"].numpy() == expected).all() and "distance" not in item
    full = object_offsets(ids00).transpose(1, 2, 0)
    assert np.abs(item["offsets"].numpy() - full).max() < 1e-3
    crops = SegmentationDataset(info, ["00"], DataConfig(resize="random-crop", size=(24, 24)),
                                train=True, boundary_width=2, instance_head="offsets")  # fmt: skip
    crop = crops[0]["offsets"].numpy()
    windows = [full[y : y + 24, x : x + 24] for y in range(25) for x in range(25)]
    assert min(np.abs(crop - w).max() for w in windows) < 1e-3
    code = main(["train", str(data), "-o", str(tmp_path / "bad"), "--task", "instance",
                 "--instance-head", "offsets", "--resize", "resize", *TINY])  # fmt: skip
    assert code == 2


def test_rays_head_trains_predicts_and_is_stored(tmp_path):
    """``--instance-head rays``: K classes + distance + n_rays ray channels, end to end; the
    ray scale chosen at the start (and said why), the targets whole-image rays."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.instances import read_instances
    from unetkit.data.layout import describe_dataset
    from unetkit.data.rays import object_rays
    from unetkit.infer import Predictor
    from unetkit.infer.evaluate import evaluate_model

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    with said_by_train() as said:
        code = main(["train", str(data), "-o", str(run), "--task", "instance", "--instance-head",
                     "rays", "--n-rays", "8", "--rays-weight", "0.5", "--epochs", "2",
                     "--steps-per-epoch", "2", "--val-stems", "03", *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    objects = ckpt.extra["objects"]
    assert objects["head"] == "rays" and objects["n_rays"] == 8 and objects["rays_weight"] == 0.5
    ids = [read_instances(p) for p in sorted((data / "instances").iterdir())[:3]]
    lengths = np.concatenate([object_rays(i, 8)[:, i > 0].ravel() for i in ids])
    assert objects["ray_scale"] == pytest.approx(lengths.mean(), abs=0.01)
    assert any("ray scale" in m and "mean ray length" in m for m in said)
    # the post-processing's thresholds, chosen on the validation image at the end
    assert any("prob_thresh" in m and "validation images" in m for m in said)
    from unetkit.objects.thresholds import NMS_GRID, PROB_GRID, SCORE_GRID

    assert objects["prob_thresh"] in PROB_GRID and objects["nms_thresh"] in NMS_GRID
    assert objects["min_score"] in SCORE_GRID
    last = load_checkpoint(run / "last.pt").extra["objects"]
    keys = ("prob_thresh", "nms_thresh", "min_score")
    assert [last[k] for k in keys] == [objects[k] for k in keys]
    assert ckpt.model_config.out_channels == 2 + 1 + 8  # background, object, distance, rays
    predictor = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    image = np.asarray(Image.open(data / "images" / "00.png"))
    probs = predictor.predict_proba(image)
    assert probs.shape == (11, *image.shape) and np.allclose(probs[:2].sum(0), 1, atol=1e-5)
    assert probs[2].min() >= 0 and probs[2].max() <= 1 and probs[3:].min() >= 0
    mask, found = predictor.predict_objects(image)
    assert mask.shape == found.shape == image.shape and ((mask > 0) == (found > 0)).all()
    report = evaluate_model(run / "best.pt", data, tmp_path / "eval", device="cpu", progress=False)
    assert "objects" in report and report["objects"]["ap_50"] is not None
    # the targets: the whole image's rays, and a crop's reach past the crop
    info = describe_dataset(data)
    whole = SegmentationDataset(info, ["00"], DataConfig(resize="none"), boundary_width=2,
                                instance_head="rays", n_rays=8)[0]  # fmt: skip
    full = object_rays(read_instances(data / "instances" / "00.png"), 8).transpose(1, 2, 0)
    assert np.allclose(whole["rays"].numpy(), full, rtol=1e-3)  # (H, W, R): rays last
    crops = SegmentationDataset(
        info,
        ["00"],
        DataConfig(resize="random-crop", size=(24, 24)),
        train=True,
        boundary_width=2,
        instance_head="rays",
        n_rays=8,
    )
    crop = crops[0]["rays"].numpy()  # fmt: skip
    windows = [full[y : y + 24, x : x + 24] for y in range(25) for x in range(25)]
    assert any(np.allclose(crop, w, rtol=1e-3) for w in windows)
    code = main(["train", str(data), "-o", str(tmp_path / "bad"), "--task", "instance",
                 "--instance-head", "rays", "--resize", "letterbox", *TINY])  # fmt: skip
    assert code == 2 and not (tmp_path / "bad").exists()


def test_predict_and_resume_read_the_checkpoint_once(dataset, tmp_path, monkeypatch, capsys):
    """Issue 11: predict read the model file twice (task check, then the predictor), and
    resume read last.pt twice (run-folder check, then the restore)."""
    import unetkit.checkpoint as checkpoint_module

    run = tmp_path / "run"
    assert tiny_run(dataset, run) == 0
    reads: list[str] = []
    real = checkpoint_module.load_checkpoint

    def counting(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", counting)
    image = dataset / "images" / "05.png"
    assert main(["predict", str(run / "best.pt"), str(image), "-o", str(tmp_path / "p")]) == 0
    assert reads == ["best.pt"]
    reads.clear()
    assert main(["train", str(dataset), "--resume", str(run), "--epochs", "2"]) == 0
    assert reads.count("last.pt") == 1, reads
    assert real(run / "last.pt").train_state["epoch"] == 2


def test_allocator_setting_is_made_by_the_cli_not_by_fit(dataset, tmp_path, monkeypatch):
    """Issue 11: fit() changed glibc's allocator for the whole process; now only the explicit
    ``performance_setup`` does, which the CLI calls (train here) and API users may call."""
    import unetkit.device as device_module
    from unetkit import performance_setup

    calls: list[int] = []
    monkeypatch.setattr(device_module, "keep_large_buffers", lambda: calls.append(1) or True)
    from unetkit import ModelConfig, fit

    cfg = TrainConfig(
        dataset=str(dataset), run_dir=str(tmp_path / "api"), epochs=1, steps_per_epoch=1,
        val_stems=("05",), model=ModelConfig(base_width=4, depth=2),
        data=DataConfig(size=(32, 32)), batch_size=2, device="cpu", precision="fp32",
    )  # fmt: skip
    fit(cfg)
    assert calls == []  # the library by itself changes nothing process-wide
    assert tiny_run(dataset, tmp_path / "cli") == 0
    assert calls == [1]
    assert performance_setup() == {"keep_large_buffers": True} and calls == [1, 1]
