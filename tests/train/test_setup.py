"""Training set-up builders: each takes the values it uses (no TrainConfig)."""

from __future__ import annotations

import pytest
import torch

from unetkit.errors import UnetkitError
from unetkit.train.setup import build_optimizer, build_scheduler, epoch_batches


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_optimizers_get_the_values_given():
    sgd = build_optimizer("sgd", _params(), lr=0.1, weight_decay=0.01, momentum=0.99, nesterov=True)
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["lr"], group["weight_decay"], group["momentum"], group["nesterov"]) == (
        0.1, 0.01, 0.99, True,
    )  # fmt: skip
    rms = build_optimizer("rmsprop", _params(), lr=0.2, weight_decay=0.0, momentum=0.5)
    assert isinstance(rms, torch.optim.RMSprop) and rms.param_groups[0]["momentum"] == 0.5
    adamw = build_optimizer("adamw", _params(), lr=0.3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.05
    assert isinstance(build_optimizer("adam", _params(), lr=1, weight_decay=0), torch.optim.Adam)
    with pytest.raises(UnetkitError, match="optimizer must be one of adam, adamw"):
        build_optimizer("lamb", _params(), lr=1, weight_decay=0)


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_warms_up_then_anneals_over_the_epochs_given():
    opt = build_optimizer("sgd", _params(), lr=1.0, weight_decay=0.0, momentum=0.0)
    sched = build_scheduler("cosine", opt, 10, epochs=3, warmup_epochs=0.5, best_metric="mean_iou")
    lrs = _lrs(sched, opt, 31)
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # 5 warm-up steps
    assert lrs[5] == pytest.approx(1.0) and lrs[30] == pytest.approx(0.01)  # 3 epochs x 10
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def test_budget_used_anneals_before_the_epochs_end():
    opt = build_optimizer("adam", _params(), lr=1.0, weight_decay=0.0)
    sched = build_scheduler(
        "poly", opt, 10, epochs=1000, warmup_epochs=0.0, best_metric="mean_iou",
        budget_used=lambda: 1.0,
    )  # fmt: skip
    assert _lrs(sched, opt, 2)[1] == pytest.approx(0.0)


@pytest.mark.parametrize(("metric", "mode"), [("val_loss", "min"), ("mean_iou", "max")])
def test_plateau_watches_the_best_metric_in_its_direction(metric, mode):
    opt = build_optimizer("adam", _params(), lr=1.0, weight_decay=0.0)
    sched = build_scheduler("plateau", opt, 10, epochs=5, warmup_epochs=1, best_metric=metric)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and sched.mode == mode
    with pytest.raises(UnetkitError, match="schedule must be one of constant"):
        build_scheduler("step", opt, 10, epochs=5, warmup_epochs=1, best_metric=metric)


def test_ranks_together_see_the_batches_of_one_process():
    one = list(epoch_batches(10, 4, 3, seed=1, epoch=2))
    two = [list(epoch_batches(10, 2, 3, seed=1, epoch=2, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*two)] == one
    assert one != list(epoch_batches(10, 4, 3, seed=1, epoch=3))
