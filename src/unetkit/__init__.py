"""unetkit: U-Net image segmentation, from a labelme folder to masks, overlays and metrics.

Importing this package has no side effects; the public API is listed in ``__all__``.
"""

from .config import AugmentConfig, DataConfig, ModelConfig, PredictConfig, TrainConfig
from .errors import UnetkitError

try:  # one version number: the package metadata (pyproject.toml)
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("unetkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "Checkpoint",
    "DataConfig",
    "ModelConfig",
    "PredictConfig",
    "Predictor",
    "SegmentationDataset",
    "TrainConfig",
    "UNet",
    "UnetkitError",
    "build_model",
    "describe_dataset",
    "evaluate_model",
    "export_model",
    "fit",
    "load_checkpoint",
    "load_model",
    "make_checkpoint",
    "performance_setup",
    "prepare",
    "preset_config",
    "save_checkpoint",
    "verify",
]


_LAZY = {  # name -> (module, attribute): torch loads with the first of these used
    "Checkpoint": ("checkpoint", "Checkpoint"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "load_model": ("checkpoint", "load_model"),
    "make_checkpoint": ("checkpoint", "make_checkpoint"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "performance_setup": ("device", "performance_setup"),
    "PRESETS": ("models", "PRESETS"),
    "UNet": ("models", "UNet"),
    "build_model": ("models", "build_model"),
    "preset_config": ("models", "preset_config"),
    "Predictor": ("infer.predict", "Predictor"),
    "fit": ("train.fit", "fit"),
    "evaluate_model": ("infer.evaluate", "evaluate_model"),
    "export_model": ("export", "export_model"),
    "prepare": ("data.prepare", "prepare"),
    "verify": ("data.verify", "verify"),
    "describe_dataset": ("data.layout", "describe_dataset"),
    "SegmentationDataset": ("data.dataset", "SegmentationDataset"),
}


def __getattr__(name: str):
    """Lazy attributes: the heavier stacks (training, prediction, data) load on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'unetkit' has no attribute {name!r}")
