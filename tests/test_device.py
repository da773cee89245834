"""device.py: what ``auto`` resolves to."""

from __future__ import annotations

import torch


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
