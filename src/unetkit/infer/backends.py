"""Where a network runs: a PyTorch checkpoint or an exported ONNX file (onnxruntime).

Both come back as a ``Network``: a callable ``(B, C, h, w) float32 -> (B, K, h', w')`` logits on
the chosen device, plus everything prediction needs about the model (``ModelInfo``), read from
the file alone. The size contract (legal sizes, output size, activation) comes from a ``UNet``
built on the ``meta`` device: it has the configuration but no weights, so ONNX inference
allocates no PyTorch parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..card import ModelCard
from ..checkpoint import Checkpoint, load_model
from ..config import ModelConfig
from ..device import autocast, resolve_device, resolve_precision
from ..errors import UnetkitError
from ..models.unet import UNet

META_PREFIX = "unetkit."  # the ONNX metadata_props keys of the model card

ModelInfo = ModelCard  # what a model file says about itself: one type (``unetkit.card``)


@dataclass
class Network:
    """A runnable network: ``run`` maps ``(B, C, h, w)`` float32 to logits ``(B, K, h', w')``.

    Attributes:
        run: the network, called under ``torch.inference_mode``.
        info: the model's description.
        shape: a weightless ``UNet`` (``meta`` device) for ``output_size``, ``legal_sizes``
            and ``activate``.
        device: where inputs must be.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast inside ``run``).
    """

    run: Callable[[torch.Tensor], torch.Tensor]
    info: ModelInfo
    shape: UNet
    device: torch.device
    precision: str = "fp32"


def _shape_model(config: ModelConfig) -> UNet:
    with torch.device("meta"):
        return UNet(config).eval()


def load_torch(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    precision: str = "auto",
    checkpoint: Checkpoint | None = None,
) -> Network:
    """A checkpoint as a ``Network`` (eval mode, channels_last, autocast at ``precision``);
    ``checkpoint``: the file's contents, when already read."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, ckpt = load_model(path, dev, checkpoint)
    if ckpt.task == "regression":
        raise UnetkitError(f"{path}: a regression (image-to-image) model has no class masks")
    model = model.to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
    info = replace(ckpt.card, source=str(path))  # the checkpoint's card untouched
    return torch_network(model, info, dev, prec)


def torch_network(model: torch.nn.Module, info: ModelInfo, device: torch.device, precision: str):
    """A ``Network`` around a model in memory (a loaded checkpoint, or the weights being
    trained, which training validates through this same path); the caller sets eval mode."""

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            return model(x).float()

    return Network(run, info, _shape_model(info.model_config), device, precision)


def load_onnx(path: str | os.PathLike, device: str | torch.device = "auto") -> Network:
    """An exported ONNX file as a ``Network`` run by onnxruntime (fp32; CUDA when asked for).

    Raises:
        UnetkitError: an unreadable file or one without unetkit metadata.
    """
    dev = resolve_device(device)
    providers = ["CPUExecutionProvider"]
    if dev.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    session = onnx_session(path, providers)  # one line naming the file for any failure
    props = session.get_modelmeta().custom_metadata_map
    info = ModelCard.from_metadata(props, str(path), prefix=META_PREFIX)
    if info.task == "regression":
        raise UnetkitError(f"{path}: a regression (image-to-image) model has no class masks")
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out)

    return Network(run, info, _shape_model(info.model_config), torch.device("cpu"), "fp32")


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None):
    """An onnxruntime session of ``path``; every failure one line naming the file.

    Raises:
        UnetkitError: a missing, empty or unreadable file, one that is not ONNX (protobuf),
            or onnxruntime not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise UnetkitError(
            f"{path}: reading ONNX files needs onnxruntime (pip install onnxruntime)"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: no such ONNX file")
    if path.stat().st_size == 0:
        raise UnetkitError(f"{path}: not a readable ONNX file: empty file (0 bytes)")
    try:
        return ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        text = " ".join(str(exc).split())[:160]
        raise UnetkitError(f"{path}: not a readable ONNX file ({text})") from None


def load_network(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    precision: str = "auto",
    checkpoint: Checkpoint | None = None,
) -> Network:
    """A checkpoint (``.pt`` / anything else) or an ONNX file (``.onnx``) as a ``Network``."""
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path, device)
    return load_torch(path, device, precision, checkpoint)
