"""``ModelConfig``: a U-Net's architecture (the presets of ``unetkit.models.presets`` are
overrides of it)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import _check_choices, _Config
from .choices import ACTIVATIONS, BLOCKS, DOWNS, HEADS, MERGES, NORMS, PADDINGS, UPS


@dataclass
class ModelConfig(_Config):
    """Everything that defines a U-Net's architecture (see ``unetkit.models.presets``).

    Args:
        in_channels: input image channels.
        out_channels: classes (softmax logits), sigmoid channels, or image channels (restore).
        depth: number of down-sampling steps (the paper: 4).
        base_width: channels of the first level; level i has ``base_width * 2**i``.
        widths: explicit per-level widths (length ``depth + 1``), overrides ``base_width``.
        padding: ``valid`` (unpadded 3x3 convs, the paper), ``zeros`` or ``reflect``.
        norm: normalisation after each conv (or before it when ``norm_first``).
        norm_first: normalise before each conv (a BN-first layout of Keras tutorials).
        groups: groups for group norm.
        activation: ``relu`` or ``leaky``; ``leaky_slope`` its negative slope.
        dropout: Dropout2d after every conv's activation in every block.
        dropout_deep: Dropout2d after the deepest encoder block and the bottleneck (the paper's
            "drop-out layers at the end of the contracting path").
        conv_bias: bias in the 3x3 convs (off when followed by batch norm).
        block: ``double3x3`` (two 3x3 convs) or ``3x3+1x1`` (a 3x3 conv, then a
            1x1 conv that sets the width).
        dilation: dilation of the encoder's 3x3 convs (2 widens a shallow U-Net's
            receptive field).
        down: ``maxpool``, ``avgpool`` or ``strided`` (3x3 stride-2 conv keeping the width).
        down_norm: norm layer in the strided down-sampling conv.
        up: ``transposed`` (2x2 stride-2 transposed conv), ``bilinear`` (align_corners=True) or
            ``nearest``. ``bilinear``/``nearest`` without ``up_conv`` halve widths in the
            decoder blocks instead (milesial's layout).
        up_conv: kernel of a conv after the up-sampling that halves the channels (0 = none).
            With ``transposed`` the transposed conv then keeps the width.
        up_bias: bias in the transposed conv (TensorFlow tutorials'
            ``conv2d_transpose`` often has none).
        up_act: activation after the up-sampling.
        merge: how a skip meets the up-sampled map: ``crop`` the skip (the paper), ``pad`` the
            up-sampled map (milesial; odd sizes work), ``resize`` the skip bilinearly.
        head: ``logits`` (softmax over classes), ``sigmoid`` (one independent channel per
            class), ``pixel_shuffle`` (``out_channels * scale**2`` then depth-to-space).
        head_kernel: kernel size of the final conv (1 or 3).
        scale: pixel-shuffle factor of the ``pixel_shuffle`` head.
        output_resize: resize the output to the input size.
        checkpointing: gradient checkpointing of every block while training.
    """

    in_channels: int = 1
    out_channels: int = 2
    depth: int = 4
    base_width: int = 64
    widths: tuple[int, ...] | None = None
    padding: str = "zeros"
    norm: str = "batch"
    norm_first: bool = False
    groups: int = 8
    activation: str = "relu"
    leaky_slope: float = 0.01
    dropout: float = 0.0
    dropout_deep: float = 0.0
    conv_bias: bool = False
    block: str = "double3x3"
    dilation: int = 1
    down: str = "maxpool"
    down_norm: bool = True
    up: str = "transposed"
    up_conv: int = 0
    up_bias: bool = True
    up_act: bool = False
    merge: str = "pad"
    head: str = "logits"
    head_kernel: int = 1
    scale: int = 1
    output_resize: bool = False
    checkpointing: bool = False

    def __post_init__(self) -> None:
        _check_choices(
            self,
            {
                "padding": PADDINGS,
                "norm": NORMS,
                "activation": ACTIVATIONS,
                "down": DOWNS,
                "up": UPS,
                "merge": MERGES,
                "head": HEADS,
                "block": BLOCKS,
            },
        )
        for name in ("in_channels", "out_channels", "depth", "base_width", "dilation", "scale"):
            if int(getattr(self, name)) < (0 if name == "depth" else 1):
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.widths is not None and len(self.widths) != self.depth + 1:
            raise ValueError(
                f"widths needs depth + 1 = {self.depth + 1} entries; got {len(self.widths)}"
            )
        if self.head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3; got {self.head_kernel}")
        if self.up_conv not in (0, 1, 3):
            raise ValueError(f"up_conv must be 0, 1 or 3; got {self.up_conv}")
        if self.head != "pixel_shuffle" and self.scale != 1:
            raise ValueError(f"scale {self.scale} needs head='pixel_shuffle'")
        for name in ("dropout", "dropout_deep"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}")

    @property
    def level_widths(self) -> tuple[int, ...]:
        """Channels per level, shallow to deep (``depth + 1`` entries)."""
        if self.widths is not None:
            return tuple(int(w) for w in self.widths)
        return tuple(self.base_width * 2**i for i in range(self.depth + 1))
