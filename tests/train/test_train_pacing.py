"""train/pacing.py: the time budget, validation and the side jobs held to a share of the time."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest
import torch
from training import tiny_config

import unetkit
from unetkit import TrainConfig, load_checkpoint
from unetkit.distributed import DistInfo
from unetkit.train import pacing


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_auto_validation_keeps_validation_a_small_share_of_the_time(dataset, tmp_path, monkeypatch):
    # as if a validation took far longer than these 1-step epochs
    monkeypatch.setattr(pacing, "VALIDATION_WAIT", 1e6)
    counts = {}
    for every in (0, 1):
        run = tmp_path / f"v{every}"
        unetkit.fit(tiny_config(dataset, run, epochs=5, steps_per_epoch=1, val_every=every))
        rows = list(csv.DictReader((run / "history.csv").open()))
        counts[every] = [r["epoch"] for r in rows if r.get("mean_iou")]
    assert counts[1] == ["1", "2", "3", "4", "5"]
    assert counts[0] == ["1", "5"]  # the first and the last


def test_last_pt_and_curves_are_held_to_a_share_of_the_time(dataset, tmp_path, monkeypatch):
    """save_every 0 (auto): last.pt and curves.png are written after an epoch only when the
    previous write is long enough ago; always after the last epoch; save_every N as before."""
    fit_module = importlib.import_module("unetkit.train.fit")
    monkeypatch.setattr(pacing, "CHORE_WAIT", 1e6)  # as if each write took ages
    saved, plotted = [], []
    real_save, real_plot = fit_module._Trainer._save, fit_module.artifacts.plots.plot_curves

    def save(self, name, full=True):
        saved.append((name, self.epoch))
        real_save(self, name, full)

    def plot(history, path):
        plotted.append(len(history))
        real_plot(history, path)

    monkeypatch.setattr(fit_module._Trainer, "_save", save)
    monkeypatch.setattr(fit_module.artifacts.plots, "plot_curves", plot)
    for every, expected in ((0, [1, 5]), (2, [2, 4, 5])):
        saved.clear()
        plotted.clear()
        run = tmp_path / f"s{every}"
        unetkit.fit(tiny_config(dataset, run, epochs=5, steps_per_epoch=1, save_every=every))
        assert [e for name, e in saved if name == "last.pt"] == expected
        assert plotted == [1, 5]  # the first epoch, then only the last
        rows = list(csv.DictReader((run / "history.csv").open()))
        assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # csv every epoch
        assert load_checkpoint(run / "last.pt").train_state["epoch"] == 5
    with pytest.raises(ValueError, match="save_every"):
        TrainConfig(save_every=-1)


# -- the clock, step by step -------------------------------------------------------------------
class _Clock:
    """``time.monotonic`` under the test's control."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_chore_waits_in_proportion_to_how_long_it_took(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(pacing.time, "monotonic", clock)
    chore = pacing.Chore(wait=50.0)
    assert chore.due()

    def job() -> None:
        clock.now += 2.0  # a write of 2 s

    chore.run(job)
    assert chore.next == 102.0 + 50.0 * 2.0
    clock.now = 201.0
    assert not chore.due()
    clock.now = 202.0
    assert chore.due()


def test_the_pacer_spends_the_budget_and_spaces_validations(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(pacing.time, "monotonic", clock)
    pacer = pacing.Pacer(time_budget=2.0, val_every=0, dist=DistInfo(), device=torch.device("cpu"))
    pacer.begin()
    clock.now += 60.0
    assert not pacer.out_of_time() and pacer.budget_used == 0.5
    assert pacer.elapsed_min() == 1.0
    clock.now += 60.0
    assert pacer.out_of_time() and pacer.budget_used == 1.0
    no_budget = pacing.Pacer(0.0, 0, DistInfo(), torch.device("cpu"))
    clock.now += 1e6
    assert not no_budget.out_of_time() and no_budget.budget_used == 0.0
    # auto validation: the first epoch, then after 4x the last validation's time of training
    assert pacer.validation_due(1)
    started = clock.now
    clock.now += 10.0
    pacer.validated(started)
    assert pacer.val_seconds == 10.0
    clock.now += 39.0
    assert not pacer.validation_due(2)
    clock.now += 1.0
    assert pacer.validation_due(3)
    every = pacing.Pacer(0.0, 3, DistInfo(), torch.device("cpu"))
    assert [e for e in range(1, 10) if every.validation_due(e)] == [3, 6, 9]
