"""The ``auto`` recipe: training patch, batch size and model width from the data fingerprint
and the device, decided when training starts (as nnU-Net plans its configuration from the
dataset fingerprint and the GPU memory).

The rule, for what is left to it (``DataConfig.size`` 0x0, ``TrainConfig.batch_size`` 0,
``TrainConfig.preset`` ``auto`` without an explicit model):

* **patch**: per axis the median training image size, capped at 256 px on a CPU and 512 px on
  a GPU, rounded down to a multiple of 2**depth (the U-Net pools it cleanly) and at least 4 x
  that (64 px at depth 4); images smaller than the patch are padded, never upsampled;
* **width** (``preset auto``: milesial's topology, the ``small`` preset's layers): base width
  16 on a CPU (1.9 M parameters: more steps in minutes of CPU time beat a wider network),
  32 on a GPU with at least 8 GiB (7.8 M);
* **batch**: 4 on a CPU; on a GPU 16 crops of 256 x 256 at width 32, scaled by the patch area
  (fewer for larger crops), between 2 and 64.

The time budget is not an input: it decides the length (the schedule anneals over it). The
decision is logged in one line and recorded in ``config.json`` and every checkpoint.

Small data sets (fewer than ``SMALL_SET`` = 40 images) change two things, each printed:

* **validation** (``unetkit.train.resolve.validates_on_regions``): no image is held out whole;
  a band of a fifth of each image's area is left out of training and validated on;
* **epoch length** (:func:`min_epoch_crops`): without a time budget or ``epochs`` the run
  is 50 epochs, and an epoch one crop per image: 8 images at batch 4 would train 100 steps.
  Such an epoch is made of at least 40 crops (each image the same whole number of times,
  every crop drawn anew), as long as an epoch of a 40-image set; with a time budget the
  budget decides the length and the epoch is left alone.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import TrainConfig
from ..data.split import SMALL_SET

CPU_PATCH, GPU_PATCH = 256, 512
MIN_EPOCH_CROPS = SMALL_SET  # an epoch of a small set, default length: as long as of 40 images
GPU_MEMORY_FOR_WIDE = 8 * 2**30


def _gpu_memory(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(device).total_memory)


def _legal(model, n: int) -> int:
    """The largest length <= ``n`` the model takes (valid-padding models shrink their input;
    pixel-shuffle models see ``n / scale``), else the smallest above."""
    if model is None:
        return n
    from ..models.unet import UNet

    with torch.device("meta"):
        net = UNet(model)
    scale = model.scale
    below, above = net.legal_sizes(n // scale)
    return int(below or above or n // scale) * scale


def plan(
    cfg: TrainConfig, fingerprint: dict[str, Any], device: torch.device, width_auto: bool
) -> tuple[TrainConfig, str]:
    """Fill in what the auto recipe decides; returns the config and a one-line reason."""
    gpu = device.type == "cuda"
    wide = gpu and _gpu_memory(device) >= GPU_MEMORY_FOR_WIDE
    model = cfg.model
    said = []
    if width_auto and model is not None:
        model = model.replace(base_width=32 if wide else 16, widths=None)
        said.append(f"width {model.base_width} ({'GPU' if wide else 'CPU'})")
    data = cfg.data
    if tuple(data.size) == (0, 0):
        step = 2 ** (model.depth if model is not None else 4)
        cap = GPU_PATCH if gpu else CPU_PATCH
        median = fingerprint.get("size_median") or [cap, cap]
        side = [_legal(model, max(4 * step, (min(cap, int(n)) // step) * step)) for n in median]
        data = data.replace(size=(side[0], side[1]))
        said.append(f"patch {side[0]}x{side[1]} (median image {median[0]}x{median[1]}, cap {cap})")
    batch = cfg.batch_size
    if batch == 0:
        if gpu:
            area = data.size[0] * data.size[1]
            width = model.base_width if model is not None else 32
            batch = round(16 * (256 * 256) / area * (32 / max(width, 1)))
            batch = int(min(64, max(2, batch)))
        else:
            batch = 4
        said.append(f"batch {batch}")
    out = cfg.replace(model=model, data=data, batch_size=batch)
    return out, ("recipe auto: " + ", ".join(said)) if said else "recipe: as configured"


def min_epoch_crops(cfg: TrainConfig, images: int) -> int:
    """The fewest crops an epoch is made of: ``MIN_EPOCH_CROPS`` for a data set of fewer
    than ``SMALL_SET`` images when the default length decides (no ``epochs``, no
    ``time_budget``, no ``steps_per_epoch``), else 0 (no floor)."""
    default_length = cfg.epochs is None and cfg.time_budget <= 0 and cfg.steps_per_epoch == 0
    return MIN_EPOCH_CROPS if default_length and images < SMALL_SET else 0
