"""DDP training (torchrun, gloo ranks on the CPU) and the process group (unetkit.distributed)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training import TINY, checkpoint_weights


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


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
    wa, wb = (
        checkpoint_weights(tmp_path / "one" / "last.pt"),
        checkpoint_weights(tmp_path / "two" / "last.pt"),
    )
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


def test_ddp_on_gpus_uses_nccl_when_the_device_is_auto(monkeypatch):
    """Bug 9.6: the backend was chosen from the device *string*, so 'auto' gave gloo."""
    from unetkit import distributed

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
    from unetkit import distributed
    from unetkit.errors import UnetkitError

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


def test_reductions_of_a_single_process_are_the_value_itself():
    from unetkit.distributed import DistInfo, all_max, all_mean

    one = DistInfo()
    assert not one.enabled and one.is_main
    assert all_max(0.25, one, torch.device("cpu")) == 0.25
    assert all_mean(0.75, one, torch.device("cpu")) == 0.75
