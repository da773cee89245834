"""train/ema.py: the moving average of the weights, and what checkpoints hold of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training import tiny_config

import unetkit
from unetkit import load_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


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
    unetkit.fit(tiny_config(dataset, tmp_path / "run", epochs=1))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    raw = state.train_state["raw_weights"]
    assert any(not torch.equal(raw[k], state.state_dict[k]) for k in raw)  # the average
    best = load_checkpoint(tmp_path / "run" / "best.pt").state_dict
    assert all(torch.equal(best[k], state.state_dict[k]) for k in best)  # 1 epoch: same
