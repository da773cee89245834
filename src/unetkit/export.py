"""Export a checkpoint to ONNX or TorchScript, with its metadata, and prove the export right.

The exported file carries the model card of ``ModelCard.for_export`` (classes, palette,
preprocessing, task, model config, object post-processing) as JSON: ONNX in ``metadata_props``
(``unetkit.*`` keys), TorchScript in the extra file ``unetkit.json``. Nothing about the training
data travels (no image names, no data fingerprint, no training-only preprocessing fields).

Beside the card, ``unetkit.input_contract`` (``input_contract``) states in plain data what any
runtime needs to feed the network without unetkit: channel order, value scaling, the
normalisation and its statistics, the legal input sizes, and what the output is (logits, the
activation, the output size). ONNX files repeat it as readable text in the graph's
``doc_string``.

Before the file is renamed into place, a parity check runs it against the PyTorch model on
random inputs of two sizes (a small legal one and the training size); a failed check leaves no
file behind.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .card import ModelCard
from .checkpoint import Checkpoint, load_model
from .errors import UnetkitError
from .files import atomic_path
from .infer.backends import META_PREFIX, onnx_session

if TYPE_CHECKING:
    from .models.unet import UNet

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
TORCHSCRIPT_META = "unetkit.json"
CONTRACT_KEY = "input_contract"
CONTRACT_VERSION = 1
MAX_LOGIT_DIFF = 1e-4
MIN_AGREEMENT = 0.9999
_SCAN = 4096  # how far size_contract looks for the smallest legal size


def export_metadata(ckpt: Checkpoint, model: UNet | None = None) -> dict[str, str]:
    """The exported model card (``ModelCard.to_export_dict``) and the input contract
    (``input_contract``, under ``input_contract``) as ``{key: JSON string}`` (keys without the
    prefix). ``model``: the network (or one of its configuration), for the size rule."""
    meta = ckpt.card.to_metadata(export=True)
    meta[CONTRACT_KEY] = json.dumps(input_contract(ckpt.card, model))
    return meta


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
    from .data.normalize import PERCENTILES, STATS_PIXELS

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
    rays = _rays(card)
    if card.task == "instance" and len(names) == k - 1 - rays:
        head = instance_head(card) or "boundary"
        names += [head if head != "rays" else "distance"] + [f"ray{i}" for i in range(rays)]
    if k == 1:
        return [names[-1] if names else "foreground"]
    return names[:k] + [f"channel{i}" for i in range(len(names), k)]


def _rays(card: ModelCard) -> int:
    """The ray channels of a rays-head instance model, else 0."""
    return int((card.objects or {}).get("n_rays") or 32) if instance_head(card) == "rays" else 0


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
        from .models.unet import UNet

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
        k = cfg.out_channels - 1 - rays  # after the classes: boundary or distance (and rays)
        separates = (
            f"the last channel ({head}) separates objects (a seeded watershed"
            if not rays
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
                [0, cfg.out_channels - 1 - rays] if head in ("distance", "rays") else None
            ),
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


def parse_metadata(props: dict[str, str], source: str | os.PathLike) -> dict[str, Any]:
    """Decode ``export_metadata`` output (with or without the ``unetkit.`` prefix) into the
    card's plain data (``ModelCard.to_dict``).

    Raises:
        UnetkitError: the file has no unetkit metadata or it is not valid.
    """
    return ModelCard.from_metadata(props, str(source), prefix=META_PREFIX).to_dict()


def _sample_sizes(model: UNet, ckpt: Checkpoint) -> list[tuple[int, int]]:
    """A small legal input size (not square, to catch swapped axes) and the training size."""
    small = tuple(model.legal_sizes(n)[1] for n in (37, 45))
    real = tuple(model.legal_sizes(int(n))[1] for n in ckpt.preprocessing.size_or())
    if None in small or None in real:
        raise UnetkitError("no legal input size near the training size for the parity check")
    return [small, real]  # type: ignore[list-item]


def _onnx_bytes(model: torch.nn.Module, sample: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter needs no onnxscript
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notes; parity is checked below
        torch.onnx.export(
            model,
            (sample,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "out_height", 3: "out_width"},
            },
            opset_version=opset,
            **kwargs,
        )
    return buffer.getvalue()


def stamp_onnx(proto, ckpt: Checkpoint, model: UNet, note: str = "") -> None:
    """Write unetkit's metadata into an ``onnx.ModelProto`` (replacing any it held): the model
    card as ``unetkit.*`` ``metadata_props``, the producer, and the input contract (plus
    ``note``, a line of its own) as the graph's ``doc_string``."""
    meta = export_metadata(ckpt, model)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    proto.producer_name = "unetkit"
    proto.doc_string = contract_text(json.loads(meta[CONTRACT_KEY])) + (f"\n{note}" if note else "")


def _write_onnx(model, ckpt: Checkpoint, sample: torch.Tensor, path: Path, opset: int) -> None:
    import onnx

    proto = onnx.load_from_string(_onnx_bytes(model, sample, opset))
    stamp_onnx(proto, ckpt, model)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _write_torchscript(model, ckpt: Checkpoint, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, sample, check_trace=False)
        meta = json.dumps({k: json.loads(v) for k, v in export_metadata(ckpt, model).items()})
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_META: meta})


def _runner(fmt: str, path: Path):
    """The exported file as a function ``np.ndarray (B, C, H, W) -> np.ndarray logits``."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def _compare(reference: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """``(max |difference|, agreement of argmax or of the sign for one channel)``."""
    if reference.shape != exported.shape:
        return float("inf"), 0.0
    diff = float(np.abs(reference - exported).max())
    if reference.shape[1] == 1:
        agree = np.mean((reference > 0) == (exported > 0))
    else:
        agree = np.mean(reference.argmax(1) == exported.argmax(1))
    return diff, float(agree)


def check_parity(
    model: UNet,
    run,
    sizes: list[tuple[int, int]],
    source: str | os.PathLike,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run the exported model and the PyTorch model on random inputs and compare.

    Args:
        model: the PyTorch model in eval mode (fp32, CPU).
        run: ``np.ndarray (B, C, H, W) float32 -> np.ndarray (B, K, H', W')``.
        sizes: input ``(H, W)`` sizes to try (batch of 2 for the first, 1 for the others).
        source: the exported file, for messages.
        seed: random seed of the inputs.

    Returns:
        Per size: ``{"size", "max_abs_diff", "agreement"}``.

    Raises:
        UnetkitError: max |logit difference| > 1e-4 or argmax agreement < 99.99 %, saying by how
            much.
    """
    gen = torch.Generator().manual_seed(seed)
    results = []
    for i, (h, w) in enumerate(sizes):
        x = torch.rand(2 if i == 0 else 1, model.config.in_channels, h, w, generator=gen)
        with torch.inference_mode():
            reference = model(x).float().numpy()
        diff, agree = _compare(reference, np.asarray(run(x.numpy()), dtype=np.float32))
        results.append({"size": [h, w], "max_abs_diff": diff, "agreement": agree})
        if diff > MAX_LOGIT_DIFF or agree < MIN_AGREEMENT:
            raise UnetkitError(
                f"{source}: parity check failed at input {h}x{w}: max |logit difference| "
                f"{diff:.3g} (limit {MAX_LOGIT_DIFF:g}), argmax agreement {100 * agree:.4f} % "
                f"(limit {100 * MIN_AGREEMENT:.2f} %)"
            )
        # debug only: the caller reports the results (the CLI prints each size once)
        log.debug("parity %dx%d: max |diff| %.2e, agreement %.4f %%", h, w, diff, 100 * agree)
    return results


def export_model(
    checkpoint: str | os.PathLike,
    fmt: str,
    out_path: str | os.PathLike,
    opset: int = 17,
    check: bool = True,
) -> dict[str, Any]:
    """Export a checkpoint to ONNX (dynamic batch, height, width) or TorchScript (traced).

    Args:
        checkpoint: a unetkit checkpoint file.
        fmt: ``onnx`` or ``torchscript``.
        out_path: the file to write (atomically; nothing is written if the check fails).
        opset: ONNX opset version.
        check: run the parity check (``check_parity``) before the file is put in place.

    Returns:
        ``{"path", "format", "parity": [...]}``.

    Raises:
        UnetkitError: an unknown format, an unreadable checkpoint or a failed parity check.
    """
    if fmt not in FORMATS:
        raise UnetkitError(
            f"export format must be one of {', '.join(FORMATS)}, bioimageio; got {fmt!r}"
        )
    model, ckpt = load_model(checkpoint, "cpu")
    model = model.float().eval()
    sizes = _sample_sizes(model, ckpt)
    sample = torch.rand(1, model.config.in_channels, *sizes[0])
    out_path = Path(out_path)
    parity: list[dict[str, Any]] = []
    with atomic_path(out_path) as tmp:
        if fmt == "onnx":
            _write_onnx(model, ckpt, sample, tmp, opset)
        else:
            _write_torchscript(model, ckpt, sample, tmp)
        if check:
            parity = check_parity(model, _runner(fmt, tmp), sizes, out_path)
    log.debug("exported %s to %s", checkpoint, out_path)
    return {"path": str(out_path), "format": fmt, "parity": parity}


def read_torchscript_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The unetkit metadata stored in a TorchScript file by ``export_model``."""
    extra = {TORCHSCRIPT_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise UnetkitError(f"{path}: not a readable TorchScript file ({str(exc)[:160]})") from None
    if not extra[TORCHSCRIPT_META]:
        raise UnetkitError(f"{path}: no unetkit metadata in this TorchScript file")
    raw = extra[TORCHSCRIPT_META]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The unetkit metadata stored in an ONNX file by ``export_model`` (via onnxruntime)."""
    session = onnx_session(path)
    return parse_metadata(session.get_modelmeta().custom_metadata_map, path)
