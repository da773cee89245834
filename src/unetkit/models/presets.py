"""Named presets: the paper's U-Net, milesial/Pytorch-UNet's and common tutorial variants,
each as data over ``ModelConfig``."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .unet import UNet

# shared by the Keras / TensorFlow variants: widths 32..512, same padding, no norm, crop merge
_KERAS: dict[str, Any] = dict(
    base_width=32, padding="zeros", norm="none", conv_bias=True, merge="crop"
)
_RESTORE: dict[str, Any] = dict(
    _KERAS, activation="leaky", leaky_slope=0.2, up_bias=False, in_channels=3, out_channels=3
)
# the paper's layers, shared with the dilated variant: valid convs with bias, no norm, dropout
# at the deepest level
_VALID: dict[str, Any] = dict(padding="valid", norm="none", conv_bias=True, dropout_deep=0.5)
# milesial's layers, shared by its two presets and the small one
_MILESIAL: dict[str, Any] = dict(
    padding="zeros", norm="batch", merge="pad", in_channels=3, out_channels=2
)
# shared by the tutorial variants: BN, Dropout2d(0.3), LeakyReLU, strided-conv down, 1x1 up
# conv, crop merge, 3x3 head
_TUTORIAL: dict[str, Any] = dict(
    norm="batch",
    dropout=0.3,
    activation="leaky",
    down="strided",
    up_conv=1,
    merge="crop",
    head_kernel=3,
    in_channels=3,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Ronneberger et al. 2015: valid 3x3 convs + ReLU, max-pool, 2x2 up-conv, crop + concat.
    "paper": dict(_VALID, merge="crop", in_channels=1, out_channels=2),
    # github milesial/Pytorch-UNet: DoubleConv (conv-BN-ReLU x2), pad merge, odd sizes work.
    "milesial": dict(_MILESIAL, up="transposed"),
    "milesial-bilinear": dict(_MILESIAL, up="bilinear"),
    # tutorial variant: reflect padding, BN, Dropout2d(0.3), LeakyReLU; strided-conv down;
    # ConvT + 1x1.
    "reflect": dict(_TUTORIAL, padding="reflect", up="transposed", out_channels=2),
    # tutorial variant (PyTorch): conv-BN-dropout-LeakyReLU, strided down, nearest + 1x1 up,
    # sigmoid.
    "strided": dict(
        _TUTORIAL,
        padding="zeros",
        conv_bias=True,
        down_norm=False,
        up="nearest",
        head="sigmoid",
        out_channels=3,
    ),
    # the Keras tutorial U-Net: widths 32..512, same padding, ReLU, max-pool, transposed up,
    # sigmoid.
    "keras32": dict(_KERAS, head="sigmoid", in_channels=1, out_channels=1),
    # a TensorFlow restoration U-Net: LeakyReLU(0.2), widths 32..512, 1x1 conv to C channels
    # at the input size.
    "restore": dict(_RESTORE),
    # ... or to C * 9 channels and depth-to-space(3): 3x super-resolution.
    "x3": dict(_RESTORE, head="pixel_shuffle", scale=3),
    # a Keras variant: BN before 3x3 then 1x1 convs, average pooling, light dropout, nearest up.
    "avgpool": dict(
        _KERAS,
        norm="batch",
        norm_first=True,
        block="3x3+1x1",
        dropout=0.02,
        down="avgpool",
        up="nearest",
        up_conv=3,
        in_channels=3,
        out_channels=3,
    ),
    # a simple U-Net: dilation-2 valid encoder convs, dropout deep, resize merge and output.
    "dilated": dict(
        _VALID,
        dilation=2,
        up_act=True,
        merge="resize",
        output_resize=True,
        in_channels=3,
        out_channels=2,
    ),
    # The default training recipe's model: milesial's topology at a quarter of its width,
    # chosen on ISBI 2012 for CPU training within minutes (bench/isbi.py).
    "small": dict(_MILESIAL, base_width=16, up="transposed"),
}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` of a named preset with keyword overrides.

    ``num_classes`` is accepted as an alias of ``out_channels``. Raises ``ValueError`` for an
    unknown name, listing the valid ones.
    """
    if name == "auto":  # the auto recipe's layers (its width is decided when training starts)
        name = "small"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    if "num_classes" in overrides:
        overrides["out_channels"] = overrides.pop("num_classes")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


def build_model(name_or_config: str | ModelConfig, **overrides: Any) -> UNet:
    """Build a ``UNet`` from a preset name (with overrides) or from a ``ModelConfig``."""
    if isinstance(name_or_config, ModelConfig):
        cfg = name_or_config.replace(**overrides) if overrides else name_or_config
        return UNet(cfg)
    return UNet(preset_config(name_or_config, **overrides))
