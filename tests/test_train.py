"""Training end to end: artefacts, resume (bitwise), time budget, NaN guard, DDP, refusals."""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unetkit
from conftest import make_mixed_images
from realdata import ISBI
from unetkit import TrainConfig, UnetkitError, load_checkpoint
from unetkit.cli import main
from unetkit.config import AugmentConfig, DataConfig

TINY = [
    "--preset",
    "milesial",
    "--base-width",
    "4",
    "--depth",
    "2",
    "--patch-size",
    "32",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def _assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


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
    for key in (
        "train_loss",
        "val_loss",
        "mean_iou",
        "mean_dice",
        "pixel_accuracy",
        "lr",
        "images_per_s",
    ):
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


def test_resume_needs_a_checkpoint_and_the_same_config(dataset, tmp_path, capsys, tiny_dataset):
    assert main(["train", str(dataset), "--resume", str(tmp_path / "nothing"), *TINY[:0]]) == 2
    assert "no config.json" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _tiny_run(dataset, run) == 0
    assert main(["train", str(dataset), "--resume", str(run), "--lr", "0.5"]) == 2
    assert "cannot change in a resumed run: lr" in capsys.readouterr().err
    other = tiny_dataset(tmp_path / "other", n=7)
    assert main(["train", str(other), "--resume", str(run)]) == 2
    assert "classes or image stems differ" in capsys.readouterr().err
    (run / "last.pt").unlink()
    assert main(["train", str(dataset), "--resume", str(run)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _config(dataset: Path, run: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(dataset),
        run_dir=str(run),
        preset="milesial",
        model=unetkit.preset_config("milesial", base_width=4, depth=2),
        data=DataConfig(size=(32, 32)),
        epochs=3,
        batch_size=2,
        steps_per_epoch=3,
        val_stems=("05",),
        device="cpu",
        precision="fp32",
        deterministic=True,
        panels=0,
        augment=AugmentConfig(elastic_grid=3),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_python_api_and_time_budget_resume_is_bitwise_equal(dataset, tmp_path):
    full = unetkit.fit(_config(dataset, tmp_path / "full"))
    assert full == tmp_path / "full"
    # stop after the first step (a tiny budget), then resume to the end
    cut = _config(dataset, tmp_path / "cut", time_budget=1e-6)
    unetkit.fit(cut)
    state = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (0, 1, 1)
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    assert load_checkpoint(tmp_path / "cut" / "last.pt").train_state["step"] == 9
    _assert_bitwise_equal(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")


def test_resume_keeps_the_split_it_started_with(dataset, tmp_path, monkeypatch):
    """A run resumed after the split rule changed keeps its recorded train/val split."""
    fit_module = importlib.import_module("unetkit.train.fit")
    cut = _config(dataset, tmp_path / "cut", time_budget=1e-6, val_stems=None, val_fraction=0.34)
    unetkit.fit(cut)
    before = load_checkpoint(tmp_path / "cut" / "last.pt").train_state["data"]
    assert len(before["val"]) == 2
    monkeypatch.setattr(fit_module, "split_stems", lambda info, cfg: (["00"], ["01"]))
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    after = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert after["data"] == before and after["step"] == 9


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
    _assert_bitwise_equal(tmp_path / "full" / "last.pt", run / "last.pt")


def test_non_finite_loss_stops_without_checkpoint(dataset, tmp_path, monkeypatch):
    fit_module = importlib.import_module("unetkit.train.fit")
    real = fit_module.build_loss

    def nan_loss(*a, **kw):
        inner = real(*a, **kw)
        return lambda out, target, weight=None: inner(out, target, weight) * float("nan")

    monkeypatch.setattr(fit_module, "build_loss", nan_loss)
    with pytest.raises(
        UnetkitError,
        match=r"non-finite loss \(nan\) at epoch 1, step 1; batch "
        r"files: \d\d, \d\d",
    ):
        unetkit.fit(_config(dataset, tmp_path / "nan"))
    assert not (tmp_path / "nan" / "last.pt").exists()
    assert not (tmp_path / "nan" / "best.pt").exists()


def test_weight_map_and_binary_task(dataset, tmp_path):
    root = tmp_path / "bin"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for p in sorted((dataset / "masks").glob("*.png")):
        m = (np.asarray(Image.open(p)) > 0).astype(np.uint8) * 255  # 0/255 masks
        Image.fromarray(m).save(root / "masks" / p.name)
        (root / "images" / p.name).write_bytes((dataset / "images" / p.name).read_bytes())
    cfg = _config(root, tmp_path / "run", epochs=1, task="binary", weight_map=True)
    unetkit.fit(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.task == "binary"
    assert ckpt.model_config.out_channels == 1 and ckpt.model_config.head == "sigmoid"
    assert ckpt.train_state["config"]["loss"] == "bce+dice"


@pytest.mark.slow
def test_ddp_two_processes_match_one(dataset, tmp_path):
    """keras32 has no batch norm (SyncBatchNorm is GPU-only) and CE is a per-pixel mean, so
    two ranks of batch 2 average to exactly what one process of batch 4 computes."""
    common = [
        str(dataset),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "3",
        "--val-stems",
        "03,04,05",
        "--no-augment",
        "--loss",
        "ce",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--preset",
        "keras32",
        "--base-width",
        "4",
        "--depth",
        "2",
        "--patch-size",
        "32",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--deterministic",
    ]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "unetkit",
            "train",
            *common,
            "--batch-size",
            "4",
            "-o",
            str(tmp_path / "one"),
        ],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # a free rendezvous port: no clash with other runs
            "-m",
            "unetkit",
            "train",
            *common,
            "--batch-size",
            "2",
            "-o",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    wa, wb = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    for k in wa:
        if wa[k].is_floating_point():
            assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4), k
    hist = list(csv.DictReader((tmp_path / "two" / "history.csv").open()))
    assert len(hist) == 1
    _assert_validation_is_of_every_rank(dataset, tmp_path / "two", tmp_path / "check")


def _assert_validation_is_of_every_rank(dataset: Path, run: Path, out: Path) -> None:
    """The validation metrics a DDP run logs are those of all its val images, not rank 0's."""
    from unetkit import PredictConfig
    from unetkit.infer import evaluate_model

    row = list(csv.DictReader((run / "history.csv").open()))[-1]
    cfg = PredictConfig(strategy="full", precision="fp32", device="cpu")
    whole = evaluate_model(run / "last.pt", dataset, out, "all", cfg, progress=False)
    with_val = evaluate_model(run / "last.pt", dataset, out, config=cfg, progress=False)
    assert with_val["stems"] == ["03", "04", "05"]
    assert float(row["mean_iou"]) == pytest.approx(with_val["mean_iou"], abs=1e-6)
    assert whole["images"] == 6


@pytest.mark.slow
def test_ddp_validation_with_batch_norm_and_augmentation_covers_every_rank(dataset, tmp_path):
    """Two gloo ranks with BatchNorm and augmentation on: each validates its half of the val
    images; the logged metrics must be those of the whole confusion matrix (all-reduced)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "unetkit", "train", str(dataset), "--epochs", "1", "--steps-per-epoch", "2",
         "--val-stems", "03,04,05", *TINY, "-o", str(tmp_path / "two")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    _assert_validation_is_of_every_rank(dataset, tmp_path / "two", tmp_path / "check")


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


# -- issue 9: trust ---------------------------------------------------------------------------
def _tiny_run(dataset: Path, run: Path, *extra: str) -> int:
    return main(
        [
            "train",
            str(dataset),
            "-o",
            str(run),
            "--epochs",
            "1",
            "--val-stems",
            "05",
            "--steps-per-epoch",
            "1",
            *TINY,
            *extra,
        ]
    )


def test_resume_of_a_moved_run_writes_only_into_the_given_folder(dataset, tmp_path, capsys):
    """Bug 9.3: config.json stores the absolute run_dir and dataset; a copied run folder and
    moved data must resume in place, never in the original folder."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    old = tmp_path / "old"
    assert _tiny_run(data, old) == 0
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    new = tmp_path / "new"
    shutil.copytree(old, new)
    moved = tmp_path / "moved-data"
    data.rename(moved)
    capsys.readouterr()
    assert main(["train", str(moved), "--resume", str(new), "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert str(old) not in err
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == before
    assert load_checkpoint(new / "last.pt").train_state["epoch"] == 2
    state = load_checkpoint(new / "last.pt").train_state
    saved = state["config"]
    assert Path(saved["run_dir"]) == new and Path(saved["dataset"]) == moved
    assert state["data"]["dataset"] == str(moved.resolve())  # where `export --int8` looks


def test_resume_refuses_flags_it_would_drop(dataset, tmp_path, capsys):
    """Bug 9.10: --resume --no-augment was silently dropped."""
    run = tmp_path / "run"
    assert _tiny_run(dataset, run) == 0
    capsys.readouterr()
    assert main(["train", str(dataset), "--resume", str(run), "--no-augment"]) == 2
    assert "augment" in capsys.readouterr().err


def test_failed_start_leaves_no_run_folder_behind(dataset, tmp_path, capsys):
    """Bug 9.9: a bad mask found late left RUN_DIR/config.json, blocking the retry."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = np.zeros((40, 40), np.uint8)
    bad[5:9, 5:9] = 7  # a value outside the 3 classes of the classes file
    (data / "classes.txt").write_text("background\nsquare\ndisc\n")
    Image.fromarray(bad).save(data / "masks" / "03.png")
    run = tmp_path / "run"
    assert _tiny_run(data, run) == 2
    err = capsys.readouterr().err
    assert "03.png" in err and "Traceback" not in err
    assert not run.exists() or not any(run.iterdir())
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(data / "masks" / "03.png")
    assert _tiny_run(data, run) == 0  # the retry is not refused


def test_failure_after_start_removes_what_a_fresh_run_wrote(dataset, tmp_path, monkeypatch):
    fit_module = importlib.import_module("unetkit.train.fit")

    def boom(*a, **kw):
        raise UnetkitError("simulated failure in the first epoch")

    monkeypatch.setattr(fit_module, "train_one_epoch", boom)
    run = tmp_path / "run"
    with pytest.raises(UnetkitError, match="simulated"):
        unetkit.fit(_config(dataset, run))
    assert not run.exists() or not any(run.iterdir())


def test_time_budget_with_accumulation_stops_only_at_optimizer_steps(dataset, tmp_path):
    """Bug 9.5: a budget stop between micro-steps lost the partial gradients on resume."""
    full = unetkit.fit(_config(dataset, tmp_path / "full", accumulate=2, steps_per_epoch=4))
    cut = _config(dataset, tmp_path / "cut", accumulate=2, steps_per_epoch=4, time_budget=1e-6)
    unetkit.fit(cut)
    state = load_checkpoint(tmp_path / "cut" / "last.pt").train_state
    assert state["step_in_epoch"] % 2 == 0, state["step_in_epoch"]
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    _assert_bitwise_equal(full / "last.pt", tmp_path / "cut" / "last.pt")


def test_checkpoints_record_the_split_they_were_trained_with(dataset, tmp_path):
    """Bug 9.8 (training side): best.pt and last.pt both record train / val stems."""
    unetkit.fit(_config(dataset, tmp_path / "run", epochs=1))
    for name in ("best.pt", "last.pt"):
        data = load_checkpoint(tmp_path / "run" / name).train_state["data"]
        assert data["val"] == ["05"] and data["train"] == ["00", "01", "02", "03", "04"], name


def test_ddp_on_gpus_uses_nccl_when_the_device_is_auto(monkeypatch):
    """Bug 9.6: the backend was chosen from the device *string*, so 'auto' gave gloo."""
    from unetkit.train import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda i: seen.update(gpu=i))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend, **kw: seen.update(backend=backend)
    )
    info = distributed.init_distributed("auto")
    assert (seen["backend"], seen["gpu"], info.world_size) == ("nccl", 1, 2)
    seen.clear()
    distributed.init_distributed("cpu")
    assert seen["backend"] == "gloo"


def test_more_cuda_ranks_than_gpus_is_a_one_line_error(monkeypatch):
    """torchrun --nproc_per_node 2 on a one-GPU machine: rank 1 would ask for cuda:1 and die
    in CUDA ("invalid device ordinal"); it must say what to do instead, before any group."""
    from unetkit.errors import UnetkitError
    from unetkit.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **kw: None)
    with pytest.raises(UnetkitError, match=r"LOCAL_RANK 1 .* 1 GPU.*--nproc_per_node 1"):
        distributed.init_distributed("auto")
    assert distributed.init_distributed("cpu").world_size == 2  # gloo ranks need no GPU


def test_a_start_killed_before_its_first_checkpoint_can_be_retried(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # what a SIGKILL before the first last.pt leaves
    # killed while writing its first best.pt: the temp file is seconds old when the start is
    # retried (the kill-and-resume test met this about one run in five: "not empty", exit 2)
    (run / ".best.unetkit-tmp-ssb3fugj.tmp").write_bytes(b"")
    assert main(["train", str(dataset), "--resume", str(run)]) == 2
    assert "run it again without --resume" in capsys.readouterr().err
    assert _tiny_run(dataset, run) == 0
    assert not list(run.glob(".*unetkit-tmp*"))
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "config.json").write_text("{}")
    (tmp_path / "user" / "notes.txt").write_text("mine")  # not only unetkit's files: refused
    assert _tiny_run(dataset, tmp_path / "user") == 2
    assert "not empty" in capsys.readouterr().err


def test_auto_validation_keeps_validation_a_small_share_of_the_time(dataset, tmp_path, monkeypatch):
    fit_module = importlib.import_module("unetkit.train.fit")
    # as if a validation took far longer than these 1-step epochs
    monkeypatch.setattr(fit_module, "VALIDATION_WAIT", 1e6)
    counts = {}
    for every in (0, 1):
        run = tmp_path / f"v{every}"
        unetkit.fit(_config(dataset, run, epochs=5, steps_per_epoch=1, val_every=every))
        rows = list(csv.DictReader((run / "history.csv").open()))
        counts[every] = [r["epoch"] for r in rows if r.get("mean_iou")]
    assert counts[1] == ["1", "2", "3", "4", "5"]
    assert counts[0] == ["1", "5"]  # the first and the last


def test_last_pt_and_curves_are_held_to_a_share_of_the_time(dataset, tmp_path, monkeypatch):
    """save_every 0 (auto): last.pt and curves.png are written after an epoch only when the
    previous write is long enough ago; always after the last epoch; save_every N as before."""
    fit_module = importlib.import_module("unetkit.train.fit")
    monkeypatch.setattr(fit_module, "CHORE_WAIT", 1e6)  # as if each write took ages
    saved, plotted = [], []
    real_save, real_plot = fit_module._Trainer._save, fit_module.artifacts.viz.plot_curves

    def save(self, name, full=True):
        saved.append((name, self.epoch))
        real_save(self, name, full)

    def plot(history, path):
        plotted.append(len(history))
        real_plot(history, path)

    monkeypatch.setattr(fit_module._Trainer, "_save", save)
    monkeypatch.setattr(fit_module.artifacts.viz, "plot_curves", plot)
    for every, expected in ((0, [1, 5]), (2, [2, 4, 5])):
        saved.clear()
        plotted.clear()
        run = tmp_path / f"s{every}"
        unetkit.fit(_config(dataset, run, epochs=5, steps_per_epoch=1, save_every=every))
        assert [e for name, e in saved if name == "last.pt"] == expected
        assert plotted == [1, 5]  # the first epoch, then only the last
        rows = list(csv.DictReader((run / "history.csv").open()))
        assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # csv every epoch
        assert load_checkpoint(run / "last.pt").train_state["epoch"] == 5
    with pytest.raises(ValueError, match="save_every"):
        TrainConfig(save_every=-1)


def test_weight_average_follows_the_formula_and_is_what_checkpoints_hold(dataset, tmp_path):
    from unetkit.train.ema import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = WeightAverage(net, 0.9)
    expected = 0.0
    for t in range(1, 30):
        with torch.no_grad():
            net.weight.fill_(float(t))
        avg.update()
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * t
    assert float(avg.model.weight[0, 0]) == pytest.approx(expected, rel=1e-6)
    unetkit.fit(_config(dataset, tmp_path / "run", epochs=1))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    raw = state.train_state["raw_weights"]
    assert any(not torch.equal(raw[k], state.state_dict[k]) for k in raw)  # the average
    best = load_checkpoint(tmp_path / "run" / "best.pt").state_dict
    assert all(torch.equal(best[k], state.state_dict[k]) for k in best)  # 1 epoch: same


def test_validation_reports_what_evaluate_reports(dataset, tmp_path):
    """Issue 10.5: best.pt is chosen on the metric ``evaluate`` reports, by the same path
    (Predictor defaults: the 40 px images are tiled at the 32 px training size)."""
    from unetkit import PredictConfig
    from unetkit.infer import evaluate_model

    run = tmp_path / "run"
    unetkit.fit(_config(dataset, run, epochs=2, val_stems=("03", "04", "05")))
    row = list(csv.DictReader((run / "history.csv").open()))[-1]
    cfg = PredictConfig(precision="fp32", device="cpu")
    metrics = evaluate_model(run / "last.pt", dataset, tmp_path / "r", config=cfg, progress=False)
    assert metrics["stems"] == ["03", "04", "05"]
    for key in ("mean_iou", "mean_dice", "pixel_accuracy"):
        assert float(row[key]) == pytest.approx(metrics[key], abs=2e-6), key  # csv: 6 digits


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
    _assert_bitwise_equal(tmp_path / "full" / "last.pt", run / "last.pt")
    history = [
        {k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_min")}
        for row in load_checkpoint(run / "last.pt").train_state["history"]
    ]
    reference = [
        {k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_min")}
        for row in load_checkpoint(tmp_path / "full" / "last.pt").train_state["history"]
    ]
    assert history == reference


def test_resized_training_validates_whole_images_with_panels(dataset, tmp_path):
    """A model trained on resized images is validated at the images' own size (as predict
    does it); the panels show the whole image (they crashed on a size mismatch)."""
    run = tmp_path / "run"
    cfg = _config(dataset, run, epochs=1, panels=1, data=DataConfig(resize="resize", size=(32, 32)))
    unetkit.fit(cfg)
    assert (run / "panels" / "epoch_0001.png").is_file()


# -- --task instance ---------------------------------------------------------------------------
def make_instance_dataset(root: Path, n: int = 4, size: int = 48, seed: int = 0) -> Path:
    """images/ + masks/ + instances/: pairs of touching discs (one class)."""
    from unetkit.data.instances import write_instances

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        ids = np.zeros((size, size), np.int32)
        cy, cx = rng.integers(10, size - 20, 2)
        for k, (dy, dx) in enumerate(((0, 0), (0, 10), (12, 4)), start=1):
            ids[((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 < 36) & (ids == 0)] = k
        image = np.where(ids > 0, 200, 40) + rng.normal(0, 10, ids.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{i:02d}.png"
        )
        Image.fromarray((ids > 0).astype(np.uint8)).save(root / "masks" / f"{i:02d}.png")
        write_instances(root / "instances" / f"{i:02d}.png", ids)
    return root


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

    from unetkit.train.losses import DistanceHeadLoss

    fit_module = importlib.import_module("unetkit.train.fit")  # the package exports fit()
    factors = []

    class Recording(DistanceHeadLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            factors.append(self.factor)

    monkeypatch.setattr(fit_module, "DistanceHeadLoss", Recording)
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


@contextlib.contextmanager
def _said_by_fit():
    """The messages the training logger emits inside the block, read by a handler on the
    logger itself (whatever libraries imported by earlier tests did to logging)."""
    said: list[str] = []
    keep = logging.Handler(logging.INFO)
    keep.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    said_by = logging.getLogger("unetkit.train.fit")
    before = said_by.level, said_by.disabled
    said_by.setLevel(logging.INFO)
    said_by.disabled = False
    said_by.addHandler(keep)
    try:
        yield said
    finally:
        said_by.removeHandler(keep)
        said_by.setLevel(before[0])
        said_by.disabled = before[1]


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
    with _said_by_fit() as said:
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


def test_rays_thresholds_are_chosen_in_the_held_out_bands_of_a_small_set(tmp_path):
    """A small set holds no image out whole: the rays head's thresholds are chosen on each
    image's validation band, and the run says so."""
    from unetkit.objects.thresholds import PROB_GRID

    data = make_instance_dataset(tmp_path / "inst")
    run = tmp_path / "run"
    with _said_by_fit() as said:
        code = main(["train", str(data), "-o", str(run), "--task", "instance", "--instance-head",
                     "rays", "--n-rays", "8", "--epochs", "1", "--steps-per-epoch", "2",
                     *TINY])  # fmt: skip
    assert code == 0
    ckpt = load_checkpoint(run / "best.pt")
    bands = ckpt.train_state["data"]["val_regions"]
    assert bands and not ckpt.train_state["data"]["val"]
    chosen = [m for m in said if "prob_thresh" in m and "validation bands" in m]
    assert len(chosen) == 1 and f" {len(bands)} validation bands" in chosen[0]
    assert ckpt.extra["objects"]["prob_thresh"] in PROB_GRID


def test_instance_task_without_instances_is_refused(dataset, tmp_path, capsys):
    code = main(["train", str(dataset), "-o", str(tmp_path / "r"), "--task", "instance", *TINY])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "instances/" in err[0] and str(dataset) in err[0]
    assert not (tmp_path / "r").exists()


def test_instance_weight_map_comes_from_the_instances(tmp_path):
    """With --weight-map the border term sits where two true objects touch."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.layout import describe_dataset
    from unetkit.train.resolve import resolve_config, weight_map_fn

    data = make_instance_dataset(tmp_path / "inst", n=1)
    info = describe_dataset(data)
    cfg = resolve_config(TrainConfig(dataset=str(data), task="instance", weight_map=True), info)
    ds = SegmentationDataset(info, ["00"], cfg.data.replace(resize="none"),
                             weight_fn=weight_map_fn(cfg, info), boundary_width=1)  # fmt: skip
    item = ds[0]
    weight, target = item["weight"].numpy(), item["mask"].numpy()
    ids = np.asarray(Image.open(data / "instances" / "00.png")).astype(np.int32)
    touching = (
        (target == 2)
        & (np.abs(np.diff(ids, axis=1, prepend=0)) > 0)
        & (np.roll(ids, 1, axis=1) > 0)
    )
    assert touching.any() and (weight[touching] > 5).all()
    assert weight[(target == 1)].max() == 1.0


def test_weight_map_default_is_on_for_instances_only(tmp_path):
    from unetkit.data.layout import describe_dataset
    from unetkit.train.resolve import resolve_config

    data = make_instance_dataset(tmp_path / "inst", n=1)
    info = describe_dataset(data)
    assert resolve_config(TrainConfig(dataset=str(data), task="instance"), info).weight_map
    assert not resolve_config(TrainConfig(dataset=str(data)), info).weight_map
    off = TrainConfig(dataset=str(data), task="instance", weight_map=False)
    assert not resolve_config(off, info).weight_map
    assert TrainConfig.from_dict(TrainConfig().to_dict()).weight_map is None


def test_predict_and_resume_read_the_checkpoint_once(dataset, tmp_path, monkeypatch, capsys):
    """Issue 11: predict read the model file twice (task check, then the predictor), and
    resume read last.pt twice (run-folder check, then the restore)."""
    import unetkit.checkpoint as checkpoint_module

    run = tmp_path / "run"
    assert _tiny_run(dataset, run) == 0
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
    assert _tiny_run(dataset, tmp_path / "cli") == 0
    assert calls == [1]
    assert performance_setup() == {"keep_large_buffers": True} and calls == [1, 1]


def test_loading_processes_give_the_same_run_and_live_across_epochs(dataset, tmp_path, monkeypatch):
    """--workers 2 trains bitwise what --workers 0 trains (each crop is a function of seed,
    epoch and index), and one DataLoader serves every epoch: its processes are started once,
    not once per epoch (an epoch can be a few steps on a GPU)."""
    fit_module = importlib.import_module("unetkit.train.fit")  # the package exports fit()
    made = []
    real = fit_module.torch.utils.data.DataLoader

    def counting(*args, **kwargs):
        made.append(kwargs.get("num_workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module.torch.utils.data, "DataLoader", counting)
    common = ["--epochs", "3", "--steps-per-epoch", "2", "--val-stems", "05", "--seed", "3",
              *TINY, "--deterministic"]  # fmt: skip
    for workers in ("0", "2"):
        run = tmp_path / f"w{workers}"
        assert main(["train", str(dataset), "-o", str(run), "--workers", workers, *common]) == 0
    assert made == [0, 2]
    _assert_bitwise_equal(tmp_path / "w0" / "last.pt", tmp_path / "w2" / "last.pt")
    assert json.loads((tmp_path / "w2" / "config.json").read_text())["workers"] == 2
    auto = tmp_path / "auto"
    assert main(["train", str(dataset), "-o", str(auto), *common]) == 0
    assert made == [0, 2, 0]  # auto on a CPU: none
    assert json.loads((auto / "config.json").read_text())["workers"] == -1  # decided anew


def test_each_epoch_trains_on_its_own_crops(dataset, tmp_path, monkeypatch):
    """The random crop of a training sample changes from epoch to epoch: fit passes the epoch
    with each sample, and nothing else sets it."""
    from unetkit.data.dataset import SegmentationDataset

    crops: dict[str, set[bytes]] = {}
    real = SegmentationDataset.__getitem__

    def recording(self, key):
        item = real(self, key)
        if self.train:
            crops.setdefault(item["stem"], set()).add(item["image"].numpy().tobytes())
        return item

    monkeypatch.setattr(SegmentationDataset, "__getitem__", recording)
    args = ["train", str(dataset), "-o", str(tmp_path / "r"), "--epochs", "3",
            "--steps-per-epoch", "3", "--val-stems", "05", *TINY, "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    assert max(len(seen) for seen in crops.values()) > 1  # some image cropped two ways


def test_workers_auto_is_none_on_a_cpu_and_bounded_on_a_gpu(monkeypatch):
    from unetkit.device import resolve_workers

    assert resolve_workers(-1, torch.device("cpu")) == 0
    assert resolve_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_workers(-1, torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_workers(-1, torch.device("cuda")) == 3  # 16 CPUs over 4 GPUs, one for training
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert resolve_workers(-1, torch.device("cuda")) == 0


def test_a_small_set_trains_on_every_image_and_validates_on_their_bands(dataset, tmp_path):
    """6 images, the default split: none held out whole; each image's right-hand band (8 of
    40 columns) is validated on, recorded in the checkpoint and kept by a resumed run."""
    cfg = _config(dataset, tmp_path / "full", val_stems=None, epochs=2)
    unetkit.fit(cfg)
    state = load_checkpoint(tmp_path / "full" / "last.pt").train_state
    stems = [f"{i:02d}" for i in range(6)]
    assert state["data"]["train"] == stems and state["data"]["val"] == []
    assert state["data"]["val_regions"] == {s: [0, 40, 32, 40] for s in stems}
    assert (tmp_path / "full" / "best.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "full" / "history.csv").open()))
    assert rows[-1]["pixels"] == str(6 * 40 * 8)  # validation scores the bands alone
    assert "min_epoch_crops" not in state  # epochs given: the epoch is one pass
    cut = cfg.replace(run_dir=str(tmp_path / "cut"), time_budget=1e-6)
    unetkit.fit(cut)
    unetkit.fit(cut.replace(time_budget=0.0), resume=True)
    _assert_bitwise_equal(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")
    assert load_checkpoint(tmp_path / "cut" / "last.pt").train_state["data"] == state["data"]


def test_the_default_length_gives_a_small_set_epochs_of_forty_crops(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("unetkit.config.train"), "DEFAULT_EPOCHS", 1)
    run = tmp_path / "run"
    unetkit.fit(_config(dataset, run, epochs=None, steps_per_epoch=0, val_stems=("05",)))
    state = load_checkpoint(run / "last.pt").train_state
    # 5 training images, 8 times each (40 crops) at batch 2: 20 steps, not 3
    assert state["min_epoch_crops"] == 40 and state["step"] == 20 and state["epoch"] == 1
    with_budget = _config(dataset, tmp_path / "budget", epochs=None, steps_per_epoch=0,
                          val_stems=("05",), time_budget=0.05)  # fmt: skip
    unetkit.fit(with_budget)  # the budget decides the length: one pass an epoch
    state = load_checkpoint(tmp_path / "budget" / "last.pt").train_state
    assert "min_epoch_crops" not in state


def test_forty_images_keep_the_plan_they_had(tmp_path, monkeypatch):
    """From 40 images on, nothing of the small-set rule applies: whole images held out (the
    stratified fifth the earlier code chose), one crop per training image an epoch."""
    monkeypatch.setattr(importlib.import_module("unetkit.config.train"), "DEFAULT_EPOCHS", 1)
    root = make_mixed_images(tmp_path / "forty", 40)
    run = tmp_path / "run"
    unetkit.fit(_config(root, run, epochs=None, steps_per_epoch=0, val_stems=None))
    state = load_checkpoint(run / "last.pt").train_state
    assert state["data"]["val"] == ["04", "09", "11", "27", "32", "34", "35", "39"]
    assert set(state["data"]) == {"classes", "train", "val", "dataset"}  # no val_regions
    assert "min_epoch_crops" not in state and state["step"] == 16  # 32 images at batch 2
