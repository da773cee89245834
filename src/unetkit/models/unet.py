"""The one parameterised U-Net, and its size contract (legal input sizes, output size)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from ..errors import UnetkitError
from .blocks import ConvBlock, Down, Up, conv, merge, recomputing

_SEARCH = 4096  # how far legal_sizes looks on each side of a requested size


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, length)`` (reflect, no edge repeat, like
    numpy's ``reflect`` padding of any size): the one mirror rule of ``forward_any`` and of
    tiling (``unetkit.infer.tiling``).

    Returns:
        int64 array of ``stop - start`` indices; all zeros when ``length == 1``.
    """
    idx = np.arange(start, stop, dtype=np.int64)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def reflect_index(n: int, before: int, after: int, device=None) -> torch.Tensor:
    """Indices that mirror-pad a length-``n`` axis by ``before`` and ``after`` (any pad size),
    as a tensor on ``device`` (``reflect_indices``)."""
    return torch.as_tensor(reflect_indices(-before, n + after, n), device=device)


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) with every seed variant as a configuration.

    ``forward`` takes ``(B, in_channels, H, W)`` and returns raw outputs
    ``(B, out_channels, H', W')`` (logits for segmentation heads); ``activate`` turns them into
    probabilities. ``output_size`` gives ``(H', W')`` and ``legal_sizes`` the input sizes near a
    requested one that the configuration accepts; any other size raises ``ValueError``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        w = cfg.level_widths
        learned_up = cfg.up == "transposed" or cfg.up_conv > 0
        bottleneck = w[-1] if learned_up else w[-1] // 2  # milesial halves the deepest level
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = cfg.in_channels
        for i in range(cfg.depth + 1):
            deepest = i == cfg.depth
            cout = bottleneck if deepest else w[i]
            dil = 1 if deepest else cfg.dilation
            drop = cfg.dropout_deep if i >= cfg.depth - 1 else 0.0
            self.encoders.append(ConvBlock(cfg, cin, cout, cout, dil, drop))
            if not deepest:
                self.downs.append(Down(cfg, cout))
            cin = cout
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(cfg.depth)):
            if learned_up:  # up-sampling halves the width, the block keeps it
                self.ups.append(Up(cfg, cin, w[i]))
                self.decoders.append(ConvBlock(cfg, 2 * w[i], w[i], w[i]))
                cin = w[i]
            else:  # parameter-free up-sampling, the block halves the width (milesial)
                self.ups.append(Up(cfg, cin, cin))
                cout = w[i - 1] if i > 0 else w[0]
                self.decoders.append(ConvBlock(cfg, cin + w[i], cout, w[i]))
                cin = cout
        head_out = cfg.out_channels * cfg.scale**2
        head: list[nn.Module] = [conv(cfg, cin, head_out, cfg.head_kernel, bias=True)]
        if cfg.head == "pixel_shuffle":
            head.append(nn.PixelShuffle(cfg.scale))
        self.head = nn.Sequential(*head)

    # -- forward ---------------------------------------------------------------------------
    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.config.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(
                block,
                x,
                use_reentrant=False,
                context_fn=lambda: (torch.enable_grad(), recomputing()),
            )
        return block(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self.check_input(tuple(x.shape[-2:]))
        size = x.shape[-2:]
        skips = []
        for enc, down in zip(self.encoders[:-1], self.downs):
            x = self._run(enc, x)  # (B, C_i, H_i, W_i)
            skips.append(x)
            x = down(x)  # (B, C_i, H_i / 2, W_i / 2)
        x = self._run(self.encoders[-1], x)  # bottleneck (B, C_d, H_d, W_d)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = merge(skip, up(x), self.config.merge)  # (B, C_skip + C_up, H, W)
            x = self._run(dec, x)
        x = self.head(x)  # (B, out_channels, H', W')
        if self.config.output_resize:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward_any(self, x: torch.Tensor) -> torch.Tensor:
        """Run on an input of any size: mirror-pad to a legal size, then crop back exactly.

        ``(B, C, H, W)`` -> ``(B, out, H * scale, W * scale)``. For valid-padding models the
        padding also supplies the missing context at the border by mirroring (the paper's
        overlap-tile with a single tile). The padding is visible here, never inside ``forward``.
        """
        (h, w), s = x.shape[-2:], self.config.scale
        (top, bottom), (left, right) = self.padding_for(h), self.padding_for(w)
        x = x[..., reflect_index(h, top, bottom, x.device), :]
        x = x[..., reflect_index(w, left, right, x.device)]  # (B, C, H + pads, W + pads)
        y = self(x)
        return y[..., : h * s, : w * s]  # (B, out, H * s, W * s)

    def padding_for(self, n: int) -> tuple[int, int]:
        """(before, after) mirror padding that makes length ``n`` legal with output >= ``n``.

        Output pixel ``j`` of the padded input then corresponds to input pixel ``j``.
        """
        for m in range(n, n + _SEARCH):
            out = self._out_len(m)
            if out is not None and out >= n * self.config.scale:
                margin = (m * self.config.scale - out) // (2 * self.config.scale)
                return margin, m - n - margin
        raise ValueError(f"no legal input size near {n} for this U-Net")

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        """Logits to probabilities: softmax over classes, per-channel sigmoid, or identity."""
        if self.config.head == "sigmoid":
            return torch.sigmoid(outputs)
        if self.config.head == "logits" and self.config.out_channels > 1:
            return torch.softmax(outputs, dim=1)
        if self.config.head == "logits":
            return torch.sigmoid(outputs)
        return outputs

    # -- size contract ---------------------------------------------------------------------
    def _out_len(self, n: int) -> int | None:
        """Output length for input length ``n`` along one axis, or None if ``n`` is illegal."""
        cfg = self.config
        shrink = 0 if cfg.padding != "valid" else 1
        second = 0 if cfg.block == "3x3+1x1" else 1
        s, skips = n, []
        for _ in range(cfg.depth):
            s -= shrink * 2 * cfg.dilation * (1 + second)
            if s < 2:
                return None
            skips.append(s)
            if cfg.down == "strided":
                p = 0 if cfg.padding == "valid" else 1
                s = (s + 2 * p - 3) // 2 + 1
            elif cfg.merge == "resize":
                s = -(-s // 2)
            elif cfg.merge == "crop" and s % 2:
                return None  # the paper: every 2x2 pooling must see an even size
            else:
                s //= 2
        s -= shrink * 2 * (1 + second)
        if s < (2 if cfg.padding == "reflect" else 1):  # reflect padding needs 2 pixels
            return None
        for skip in reversed(skips):
            s *= 2
            if cfg.up_conv == 3:
                s -= 2 * shrink
            if cfg.merge == "crop" and (s > skip or (skip - s) % 2):
                return None
            if cfg.merge == "pad":
                if s > skip:
                    return None
                s = skip
            s -= shrink * 2 * (1 + second)
            if s < 1:
                return None
        if cfg.head_kernel == 3:
            s -= 2 * shrink
        if s < 1:
            return None
        return n if cfg.output_resize else s * cfg.scale

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output ``(H', W')`` for an input ``(H, W)``; raises ``ValueError`` if illegal."""
        self.check_input(size)
        return tuple(self._out_len(int(n)) for n in size)  # type: ignore[return-value]

    def legal_sizes(self, n: int) -> tuple[int | None, int | None]:
        """The nearest legal input lengths at or below and at or above ``n`` (None if none)."""
        below = next((m for m in range(n, max(0, n - _SEARCH), -1) if self._out_len(m)), None)
        above = next((m for m in range(max(n, 1), n + _SEARCH) if self._out_len(m)), None)
        return below, above

    def check_input(self, size: tuple[int, ...]) -> None:
        """Raise ``UnetkitError`` (a ``ValueError``) naming the size and the nearest legal ones.

        An illegal size always comes from the user (a patch size, an image, a tile), so the CLI
        reports it in one line.
        """
        for axis, n in zip(("height", "width"), size):
            if self._out_len(int(n)) is None:
                below, above = self.legal_sizes(int(n))
                near = " or ".join(str(m) for m in (below, above) if m)
                raise UnetkitError(
                    f"input {axis} {int(n)} is not legal for this U-Net "
                    f"(input {tuple(int(v) for v in size)}); nearest legal: {near or 'none'}"
                )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
