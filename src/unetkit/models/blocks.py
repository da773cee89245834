"""Building blocks of the U-Net: conv block, down-sampling, up-sampling, skip merge."""

from __future__ import annotations

import contextlib
import threading
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

_STATE = threading.local()


@contextlib.contextmanager
def recomputing():
    """Context active while gradient checkpointing recomputes a block in the backward pass."""
    _STATE.recomputing = True
    try:
        yield
    finally:
        _STATE.recomputing = False


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose running statistics are not updated twice under gradient checkpointing.

    The recomputation uses the same batch statistics (so outputs and gradients are identical)
    but leaves ``running_mean`` / ``running_var`` alone: they were updated in the forward pass.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and getattr(_STATE, "recomputing", False):
            # throwaway copies keep the op (and what autograd saves) identical to the forward
            # make_norm builds it with track_running_stats (the default)
            assert self.running_mean is not None and self.running_var is not None
            mean, var = self.running_mean.clone(), self.running_var.clone()
            return F.batch_norm(x, mean, var, self.weight, self.bias, True, 0.1, self.eps)
        return super().forward(x)


def make_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    """The configured normalisation for ``channels`` feature maps (identity for ``none``)."""
    if cfg.norm == "batch":
        return BatchNorm2d(channels)
    if cfg.norm == "group":
        groups = next(g for g in range(min(cfg.groups, channels), 0, -1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if cfg.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def make_act(cfg: ModelConfig) -> nn.Module:
    if cfg.activation == "leaky":
        return nn.LeakyReLU(cfg.leaky_slope, inplace=True)
    return nn.ReLU(inplace=True)


def conv(cfg: ModelConfig, cin: int, cout: int, k: int, dilation: int = 1, bias=None) -> nn.Conv2d:
    """A k x k conv with the configured padding (none for ``valid``)."""
    pad = 0 if cfg.padding == "valid" or k == 1 else dilation * (k // 2)
    mode: Literal["reflect", "zeros"] = "reflect" if cfg.padding == "reflect" else "zeros"
    bias = cfg.conv_bias if bias is None else bias
    return nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, padding_mode=mode, bias=bias)


class ConvBlock(nn.Sequential):
    """Two convs (3x3 + 3x3, or 3x3 + 1x1), each with norm, activation and optional dropout."""

    def __init__(
        self,
        cfg: ModelConfig,
        cin: int,
        cout: int,
        mid: int,
        dilation: int = 1,
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = []
        second_k = 1 if cfg.block == "3x3+1x1" else 3
        for a, b, k in ((cin, mid, 3), (mid, cout, second_k)):
            if cfg.norm_first:
                layers += [make_norm(cfg, a), conv(cfg, a, b, k, dilation), make_act(cfg)]
            else:
                layers += [conv(cfg, a, b, k, dilation), make_norm(cfg, b), make_act(cfg)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout2d(cfg.dropout))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Halve the resolution: 2x2 max / average pool, or a 3x3 stride-2 conv keeping the width."""

    def __init__(self, cfg: ModelConfig, channels: int):
        if cfg.down == "maxpool":
            # ceil_mode with a resize merge so odd sizes keep their last row
            layers: list[nn.Module] = [nn.MaxPool2d(2, ceil_mode=cfg.merge == "resize")]
        elif cfg.down == "avgpool":
            layers = [nn.AvgPool2d(2, ceil_mode=cfg.merge == "resize")]
        else:
            layers = [
                nn.Conv2d(
                    channels,
                    channels,
                    3,
                    stride=2,
                    padding=0 if cfg.padding == "valid" else 1,
                    padding_mode="reflect" if cfg.padding == "reflect" else "zeros",
                    bias=not (cfg.down_norm and cfg.norm != "none"),
                ),
            ]
            if cfg.down_norm:
                layers.append(make_norm(cfg, channels))
            layers.append(make_act(cfg))
        super().__init__(*layers)


class Up(nn.Sequential):
    """Double the resolution: transposed conv, or interpolation, optionally then a conv."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int):
        layers: list[nn.Module] = []
        if cfg.up == "transposed":
            mid = cin if cfg.up_conv else cout
            layers.append(nn.ConvTranspose2d(cin, mid, 2, stride=2, bias=cfg.up_bias))
        else:
            align = True if cfg.up == "bilinear" else None
            layers.append(nn.Upsample(scale_factor=2, mode=cfg.up, align_corners=align))
        if cfg.up_conv:
            layers.append(conv(cfg, cin, cout, cfg.up_conv, bias=True))
        if cfg.up_act:
            layers.append(make_act(cfg))
        super().__init__(*layers)


def merge(skip: torch.Tensor, up: torch.Tensor, mode: str) -> torch.Tensor:
    """Concatenate a skip connection with the up-sampled map: ``(B, Cs + Cu, H, W)``.

    ``crop`` centre-crops the skip to the up-sampled size (the paper), ``pad`` zero-pads the
    up-sampled map to the skip's size (milesial), ``resize`` resizes the skip bilinearly.
    """
    (hs, ws), (hu, wu) = skip.shape[-2:], up.shape[-2:]
    if mode == "crop":
        top, left = (hs - hu) // 2, (ws - wu) // 2
        skip = skip[..., top : top + hu, left : left + wu]  # (B, Cs, Hu, Wu)
    elif mode == "pad":
        dh, dw = hs - hu, ws - wu
        up = F.pad(up, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])  # (B, Cu, Hs, Ws)
    elif (hs, ws) != (hu, wu):
        skip = F.interpolate(skip, size=(hu, wu), mode="bilinear", align_corners=False)
    return torch.cat([skip, up], dim=1)  # (B, Cs + Cu, H, W)
