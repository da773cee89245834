"""unetkit: U-Net image segmentation, from a labelme folder to masks, overlays and metrics.

Importing this package has no side effects; the public API is listed in ``__all__``.
"""

from .checkpoint import Checkpoint, load_checkpoint, load_model, make_checkpoint, save_checkpoint
from .config import AugmentConfig, DataConfig, ModelConfig, PredictConfig, TrainConfig
from .errors import UnetkitError
from .models import PRESETS, UNet, build_model, preset_config

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "Checkpoint",
    "DataConfig",
    "ModelConfig",
    "PredictConfig",
    "TrainConfig",
    "UNet",
    "UnetkitError",
    "build_model",
    "load_checkpoint",
    "load_model",
    "make_checkpoint",
    "preset_config",
    "save_checkpoint",
]
