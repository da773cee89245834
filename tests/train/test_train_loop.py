"""train/loop.py: a step's inputs and targets, one training epoch, one loader for the run, each
epoch its own crops."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
from training import TINY, assert_bitwise_equal

from unetkit.cli import main
from unetkit.errors import UnetkitError
from unetkit.train.loop import EpochLoader, StepContext, center_crop, prepare_batch, train_one_epoch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


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
    assert_bitwise_equal(tmp_path / "w0" / "last.pt", tmp_path / "w2" / "last.pt")
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


# -- the parts of a step ----------------------------------------------------------------------
CPU = torch.device("cpu")


def _ctx(task: str = "multiclass", **kw) -> StepContext:
    return StepContext(CPU, "fp32", channels_last=False, task=task, **kw)


def test_center_crop_takes_the_middle_of_the_last_two_axes():
    t = torch.arange(2 * 6 * 8).reshape(2, 6, 8)
    crop = center_crop(t, (4, 4))
    assert crop.shape == (2, 4, 4)
    assert torch.equal(crop, t[:, 1:5, 2:6])
    assert torch.equal(center_crop(t, (6, 8)), t)  # the same size: unchanged


def test_prepare_batch_builds_inputs_and_targets_by_task():
    images = torch.rand(2, 1, 6, 6)
    masks = torch.randint(0, 3, (2, 6, 6))
    batch = {"image": images, "mask": masks, "weight": torch.ones(2, 6, 6)}
    inputs, target, weight = prepare_batch(batch, _ctx(), None, None)
    assert torch.equal(inputs, images) and torch.equal(target, masks)
    assert weight is not None and weight.shape == (2, 6, 6)
    # image-to-image at scale 3: the network sees the patch shrunk, the patch is the target
    inputs, target, weight = prepare_batch(
        {"image": images, "mask": masks}, _ctx("regression", input_scale=3), None, None
    )
    assert inputs.shape == (2, 1, 2, 2) and torch.equal(target, images) and weight is None
    assert float(inputs[0, 0, 0, 0]) == pytest.approx(float(images[0, 0, :3, :3].mean()), abs=1e-6)
    # the distance head: class and distance stacked as the target's channels
    batch = {"image": images, "mask": masks, "distance": torch.full((2, 6, 6), 0.5)}
    _, target, _ = prepare_batch(batch, _ctx(), None, None)
    assert target.shape == (2, 2, 6, 6)
    assert torch.equal(target[:, 0], masks.float()) and (target[:, 1] == 0.5).all()


def _batches(*values: float) -> list[dict]:
    """Batches of two 4 x 4 images of one value each, stems ``a<i>``, ``b<i>``."""
    mask = torch.zeros(2, 4, 4, dtype=torch.long)
    return [
        {"image": torch.full((2, 1, 4, 4), float(v)), "mask": mask, "stem": [f"a{i}", f"b{i}"]}
        for i, v in enumerate(values)
    ]


def _ce(out, target, weight=None):
    return torch.nn.functional.cross_entropy(out, target)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 2, 1)


def test_train_one_epoch_counts_steps_and_images_and_stops_when_told():
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    steps: list[int] = []
    result = train_one_epoch(net, _ce, optimizer, None, None, _batches(0, 1, 2), _ctx(),
                             total_steps=3, show_progress=False, on_step=steps.append)  # fmt: skip
    assert (result["steps"], result["images"], result["stopped"]) == (3, 6, False)
    assert steps == [1, 2, 3] and math.isfinite(result["loss"])
    # stop() is asked only after a step that updated the weights (accumulation 2: every
    # second batch), and never after the last
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return True

    result = train_one_epoch(net, _ce, optimizer, None, None, _batches(0, 1, 2, 3),
                             _ctx(accumulate=2), total_steps=4, stop=stop,
                             show_progress=False)  # fmt: skip
    assert (result["steps"], result["stopped"], len(asked)) == (2, True, 1)


def test_train_one_epoch_names_the_batch_of_a_non_finite_loss():
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(UnetkitError, match=r"loss \(nan\) at epoch 3, step 2; batch files: a1, b1"):
        train_one_epoch(net, _ce, optimizer, None, None, _batches(0, float("nan"), 0), _ctx(),
                        epoch=3, total_steps=3, show_progress=False)  # fmt: skip


def test_epoch_loader_keys_each_batch_by_its_epoch_and_keeps_one_loader():
    class Keys(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, key):
            return torch.tensor(key)

    loader = EpochLoader(Keys(), workers=0, pin_memory=False)
    first = loader.epoch(1, [[0, 1], [2, 3]])
    assert [b.tolist() for b in first] == [[[1, 0], [1, 1]], [[1, 2], [1, 3]]]
    second = loader.epoch(2, [[3]])
    assert second is first and [b.tolist() for b in second] == [[[2, 3]]]
    loader.close()
    assert loader.loader is None
