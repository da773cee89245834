"""The auto recipe: patch, width and batch from the fingerprint and the device."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from unetkit.config import DataConfig, TrainConfig
from unetkit.models.presets import preset_config
from unetkit.models.unet import UNet
from unetkit.train import recipe
from unetkit.train.recipe import plan

CPU = torch.device("cpu")


def _cfg(model=None, **kw) -> TrainConfig:
    model = model or preset_config("auto", in_channels=3, out_channels=2)
    return TrainConfig(dataset="d", run_dir="r", model=model, **kw)


def test_cpu_rule_patch_width_batch():
    cfg, reason = plan(_cfg(), {"size_median": [520, 696]}, CPU, width_auto=True)
    assert cfg.data.size == (256, 256)  # capped at 256 on a CPU
    assert cfg.model.base_width == 16 and cfg.batch_size == 4
    assert "patch 256x256" in reason and "width 16" in reason and "batch 4" in reason


def test_small_images_are_not_upsampled_and_sizes_pool_cleanly():
    cfg, _ = plan(_cfg(), {"size_median": [100, 200]}, CPU, width_auto=True)
    assert cfg.data.size == (96, 192)  # multiples of 2**4, never above the median
    cfg, _ = plan(_cfg(), {"size_median": [20, 30]}, CPU, width_auto=True)
    assert cfg.data.size == (64, 64)  # at least 4 x 2**depth (padded, not upsampled)


def test_valid_padding_model_gets_a_legal_patch():
    paper = preset_config("paper", in_channels=1, out_channels=2, base_width=4)
    cfg, _ = plan(_cfg(paper), {"size_median": [512, 512]}, CPU, width_auto=False)
    assert cfg.data.size == (252, 252)  # the largest legal input <= 256
    with torch.device("meta"):
        UNet(cfg.model).check_input(cfg.data.size)
    assert cfg.model.base_width == 4  # an explicit model keeps its width


def test_what_is_given_is_kept():
    given = _cfg(data=DataConfig(size=(128, 160)), batch_size=7)
    cfg, reason = plan(given, {"size_median": [512, 512]}, CPU, width_auto=False)
    assert cfg.data.size == (128, 160) and cfg.batch_size == 7
    assert reason == "recipe: as configured"


@pytest.mark.parametrize(
    ("memory_gib", "median", "width", "size", "batch"),
    [
        (80, [1024, 1024], 32, (512, 512), 4),  # 16 * (256/512)**2
        (80, [256, 256], 32, (256, 256), 16),
        (4, [256, 256], 16, (256, 256), 32),  # a small GPU: the CPU width, more crops
        (80, [64, 64], 32, (64, 64), 64),  # capped at 64
    ],
)
def test_gpu_rule(memory_gib, median, width, size, batch):
    with mock.patch.object(recipe, "_gpu_memory", return_value=memory_gib * 2**30):
        cfg, _ = plan(_cfg(), {"size_median": median}, torch.device("cuda"), width_auto=True)
    assert cfg.model.base_width == width and cfg.data.size == size and cfg.batch_size == batch
