"""The input contract of an exported model: what any runtime needs to feed the network and
read its output without unetkit, as plain data (``input_contract``).

Channel order, value scaling, the normalisation and its statistics, the legal input sizes
(``size_contract``), and what the output is (logits, the activation, the output size, the
channels' names). Exports carry it as ``unetkit.input_contract`` beside the model card;
ONNX files repeat it as readable text in the graph's ``doc_string`` (``contract_text``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..card import ModelCard
from ..errors import UnetkitError

if TYPE_CHECKING:
    from ..models.unet import UNet

CONTRACT_KEY = "input_contract"
CONTRACT_VERSION = 1
_SCAN = 4096  # how far size_contract looks for the smallest legal size


def size_contract(model: UNet) -> dict[str, int]:
    """The legal input sizes of ``model`` as an arithmetic rule, per axis.

    Returns:
        ``min``, ``step``: every ``min + n * step`` (n >= 0) is a legal height or width;
        ``step`` is the network's down-sampling factor ``2**depth``, and for same-padding
        networks ``min`` is a multiple of it (the sizes unetkit pads an image to).
        ``scale``: the output's upscaling factor (1 but for super-resolution presets);
        ``offset``: output length minus ``scale`` times the input length (0 for same padding;
        minus the context the valid convolutions consume, twice ``crop``); ``crop``: output
        pixel ``j`` is input
        pixel ``j + crop``; ``context``: rows a tile should discard at each inner border when
        an image is predicted in tiles (0 for valid padding, whose tiles need no overlap).

    Raises:
        UnetkitError: no such rule (sizes whose output length does not follow the input's).
    """
    cfg = model.config
    align = 2 ** int(cfg.depth)
    same = cfg.padding != "valid"
    for start in range(align if same else 1, _SCAN, align if same else 1):
        lens = [model._out_len(start + k * align) for k in range(6)]
        if None in lens:
            continue
        offsets = {int(out or 0) - (start + k * align) * cfg.scale for k, out in enumerate(lens)}
        if len(offsets) == 1:
            offset = offsets.pop()
            return {
                "min": start,
                "step": align,
                "scale": int(cfg.scale),
                "offset": offset,
                "crop": -offset // 2,
                "context": 2 * align if same else 0,
            }
        break
    raise UnetkitError("this U-Net's legal input sizes follow no min + n * step rule")


def _normalize_contract(card: ModelCard, channels: int) -> dict[str, Any]:
    from ..data.normalize import PERCENTILES, STATS_PIXELS

    pre = card.for_export().preprocessing
    subsample = (
        f"over every pixel of the whole image, per channel (above {STATS_PIXELS} pixels over a "
        f"grid of every k-th row and column, k = ceil(sqrt(H * W / {STATS_PIXELS})))"
    )
    if pre.normalize == "image":
        return {
            "mode": "image",
            "statistics": "per image",
            "shift": "mean",
            "scale": "standard deviation (population, ddof 0)",
            "over": subsample,
            "formula": "(x - mean) / max(std, 1e-6)",
        }
    if pre.normalize == "percentile":
        return {
            "mode": "percentile",
            "statistics": "per image",
            "percentiles": list(PERCENTILES),
            "method": "linear interpolation between order statistics (numpy.percentile)",
            "over": subsample,
            "formula": (
                f"(x - p{PERCENTILES[0]:g}) / max(p{PERCENTILES[1]:g} - p{PERCENTILES[0]:g}, 1e-6)"
            ),
        }

    def per_channel(values: tuple[float, ...]) -> list[float]:
        return [float(v) for v in (values * channels if len(values) == 1 else values)]

    return {
        "mode": pre.normalize,
        "statistics": "the training data set's" if pre.normalize == "dataset" else "fixed",
        "mean": per_channel(pre.mean),
        "std": per_channel(pre.std),
        "formula": "(x - mean[c]) / std[c]",
    }


def channel_names(channels: int) -> list[str]:
    """``grey``, ``red green blue``, or ``channel0 ...``: the input channels in order."""
    return {1: ["grey"], 3: ["red", "green", "blue"]}.get(
        channels, [f"channel{i}" for i in range(channels)]
    )


def instance_head(card: ModelCard) -> str | None:
    """``boundary``, ``distance`` or ``rays`` for instance models (``ObjectConfig.head``),
    else None."""
    if card.task != "instance":
        return None
    return str((card.objects or {}).get("head") or "boundary")


def output_names(card: ModelCard) -> list[str]:
    """The output channels: the classes (plus ``boundary`` or ``distance`` for instance
    models, ``distance`` and ``ray0`` ... for the rays head), or the positive class of a
    one-channel binary head."""
    k = card.model_config.out_channels
    names = list(card.classes)
    after = _after(card)
    if card.task == "instance" and len(names) == k - 1 - after:
        head = instance_head(card) or "boundary"
        names += {
            "rays": ["distance"] + [f"ray{i}" for i in range(after)],
            "offsets": ["boundary", "offset_x", "offset_y"],
        }.get(head, [head])
    if k == 1:
        return [names[-1] if names else "foreground"]
    return names[:k] + [f"channel{i}" for i in range(len(names), k)]


def _rays(card: ModelCard) -> int:
    """The ray channels of a rays-head instance model, else 0."""
    return int((card.objects or {}).get("n_rays") or 32) if instance_head(card) == "rays" else 0


def _after(card: ModelCard) -> int:
    """Channels after an instance model's K + 1: the rays, or the offsets head's 2."""
    return 2 if instance_head(card) == "offsets" else _rays(card)


def activation(card: ModelCard) -> str:
    """``softmax``, ``sigmoid`` or ``none``: what turns the raw output into probabilities
    (``UNet.activate``)."""
    cfg = card.model_config
    if cfg.head == "sigmoid" or (cfg.head == "logits" and cfg.out_channels == 1):
        return "sigmoid"
    return "softmax" if cfg.head == "logits" else "none"


def input_contract(card: ModelCard, model: UNet | None = None) -> dict[str, Any]:
    """What a runtime needs to feed the exported network and read its output, as plain data.

    Args:
        card: the model card.
        model: the network (weights not needed); None builds a weightless one from the card.

    Returns:
        JSON-able ``{"contract_version", "input", "output", "task", "classes", "palette",
        "objects", "prediction"}``.
    """
    if model is None:
        from ..models.unet import UNet

        with torch.device("meta"):
            model = UNet(card.model_config)
    cfg = card.model_config
    c = cfg.in_channels
    sizes = size_contract(model)
    pre = card.for_export().preprocessing
    act = activation(card)
    binary = act == "sigmoid"
    mask = (
        "argmax over channels = class index"
        if not binary
        else "class index 1 where the probability > 0.5 (unetkit predict --threshold), else 0"
        if cfg.out_channels == 1
        else "per channel: probability > 0.5"
    )
    head = instance_head(card)
    rays = _rays(card)
    if head is not None:
        k = cfg.out_channels - 1 - _after(card)  # the classes; boundary or distance next
        separates = (
            f"the last channel ({head}) separates objects (a seeded watershed"
            if head in ("boundary", "distance")
            else f"channel {k} (boundary) and channels {k + 1}, {k + 2} (x, y offsets from "
            "each object's centre over its radius, raw) separate objects (a seeded watershed"
            if head == "offsets"
            else f"channel {k} (distance: the object probability) and channels {k + 1}.."
            f"{k + rays} (ray lengths) give objects (star-convex polygons with non-maximum "
            "suppression"
        )
        mask = (
            f"object pixels where 1 - p(channel 0) > objects.fg_threshold get the argmax of "
            f"channels 1..{k - 1} (+1), others 0; {separates}, parameters in 'objects')"
        )
    order = {1: "grey", 3: "RGB"}.get(c, "as stored in the file")
    return {
        "contract_version": CONTRACT_VERSION,
        "input": {
            "name": "image",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": c,
            "channel_order": order,
            "channel_names": channel_names(c),
            "channel_conversion": (
                "alpha is dropped; a grey image is repeated into 3 channels; an RGB image "
                "becomes grey as round(0.299 R + 0.587 G + 0.114 B) (ITU-R BT.601)"
            ),
            "value_scale": {"uint8": 255, "uint16": 65535, "float": 1},
            "value_scaling": (
                "x = pixel / value_scale[dtype]: integers by their type's maximum, floats "
                "as they are (in [0, 1]); the normalisation follows on x"
            ),
            "normalize": _normalize_contract(card, c),
            "size": {
                **{k: sizes[k] for k in ("min", "step")},
                "rule": (
                    "height and width each min + n * step (n >= 0); unetkit mirrors (reflect, "
                    "no edge repeat) an image at its bottom and right up to such a size and "
                    "crops the output back"
                    if sizes["offset"] == 0
                    else "height and width each min + n * step (n >= 0); the valid "
                    "convolutions consume context: mirror (reflect) the image by crop pixels "
                    "on every side before, and more at the bottom and right up to such a size"
                ),
            },
        },
        "output": {
            "name": "logits",
            "layout": "NCHW",
            "channels": cfg.out_channels,
            "channel_names": output_names(card),
            "values": "raw logits" if act != "none" else "raw values",
            "activation": act,
            "activation_axis": "channel" if act == "softmax" else None,
            # the distance head: softmax over the class channels, sigmoid on the last one; the
            # rays head: the same on the channels before its rays
            "activation_channels": (
                [0, cfg.out_channels - 1 - rays]
                if head in ("distance", "rays")
                else [0, cfg.out_channels - 2]
                if head == "offsets"
                else None
            ),
            "offset_channels": [cfg.out_channels - 2, cfg.out_channels]
            if head == "offsets"
            else None,  # fmt: skip
            "last_channel": "sigmoid" if head == "distance" else None,
            "distance_channel": "sigmoid" if head == "rays" else None,
            "ray_channels": (
                {
                    "channels": [cfg.out_channels - rays, cfg.out_channels],
                    "values": "ray length in pixels = objects.ray_scale x max(output, 0)",
                    "angles": f"ray i at 2 pi i / {rays} from +x (columns) towards +y (rows)",
                }
                if rays
                else None
            ),
            "mask": mask if act != "none" else None,
            "size": ("input size" if sizes["scale"] == 1 else "input size x scale")
            + ("" if sizes["offset"] == 0 else " + offset"),
            "scale": sizes["scale"],
            "offset": sizes["offset"],
            "crop": sizes["crop"],
            "tile_context": sizes["context"],
        },
        "task": card.task,
        "classes": list(card.classes),
        "palette": [[int(v) for v in rgb] for rgb in card.palette],
        "objects": card.objects if card.task == "instance" else None,
        "prediction": {
            "resize": pre.resize,
            "size": [int(n) for n in pre.size],
            "note": (
                "resize none: the image at its own scale, whole or in tiles; letterbox / "
                "resize: scaled to size (letterbox: padded to a square first), the "
                "probabilities scaled back"
            ),
        },
    }


def contract_text(contract: dict[str, Any]) -> str:
    """The input contract as a few readable lines (the ONNX graph's ``doc_string``)."""
    inp, out = contract["input"], contract["output"]
    norm = inp["normalize"]
    if "mean" in norm:
        how = f"{norm['formula']} with mean {norm['mean']} and std {norm['std']}"
    else:
        how = f"{norm['formula']} per image and channel"
    lines = [
        f"unetkit U-Net ({contract['task']}): input 'image' float32 NCHW, "
        f"{inp['channels']} channel(s) in {inp['channel_order']} order.",
        "Scale pixels to [0, 1] first: uint8 / 255, uint16 / 65535, floats as they are.",
        f"Normalise ({norm['mode']}): {how}.",
        f"Height and width: {inp['size']['min']} + n * {inp['size']['step']}.",
        f"Output 'logits' NCHW, channels {out['channel_names']}; activation {out['activation']}"
        + (" (the last channel: sigmoid)" if out.get("last_channel") == "sigmoid" else "")
        + (f"; mask: {out['mask']}" if out["mask"] else "")
        + ("." if out["size"] == "input size" else f"; size = {out['size']} ({out['offset']:+d})."),
        "Full contract: metadata key unetkit.input_contract (JSON).",
    ]
    return "\n".join(lines)
