"""Typed configuration: plain dataclasses with a strict ``from_dict`` and a ``to_dict``.

One module per config (``model``, ``data``, ``objects``, ``train``, ``predict``) over the
shared engine (``base``) and the allowed values (``choices``); every name is importable from
here. The first row of the layering (CONTRIBUTING.md): it imports nothing of unetkit beyond
``errors``, ``files`` and ``progress``.
"""

from .base import apply_overrides, parse_size
from .choices import (
    ACTIVATIONS,
    BLENDS,
    BLOCKS,
    DOWNS,
    HEADS,
    INSTANCE_HEADS,
    LOSSES,
    MERGES,
    NORMALIZATIONS,
    NORMS,
    OPTIMIZERS,
    PADDINGS,
    PRECISIONS,
    RESIZES,
    SAMPLINGS,
    SCHEDULES,
    STRATEGIES,
    TASKS,
    UPS,
)
from .data import AugmentConfig, DataConfig
from .model import ModelConfig
from .objects import ObjectConfig
from .predict import PredictConfig
from .train import DEFAULT_EPOCHS, TrainConfig

__all__ = [
    "ACTIVATIONS",
    "BLENDS",
    "BLOCKS",
    "DEFAULT_EPOCHS",
    "DOWNS",
    "HEADS",
    "INSTANCE_HEADS",
    "LOSSES",
    "MERGES",
    "NORMALIZATIONS",
    "NORMS",
    "OPTIMIZERS",
    "PADDINGS",
    "PRECISIONS",
    "RESIZES",
    "SAMPLINGS",
    "SCHEDULES",
    "STRATEGIES",
    "TASKS",
    "UPS",
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "ObjectConfig",
    "PredictConfig",
    "TrainConfig",
    "apply_overrides",
    "parse_size",
]
