"""U-Net model family: one class, many presets."""

from .presets import PRESETS, build_model, preset_config
from .unet import UNet

__all__ = ["PRESETS", "UNet", "build_model", "preset_config"]
