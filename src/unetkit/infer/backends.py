"""Where a network runs: a PyTorch checkpoint or an exported ONNX file (onnxruntime, or
OpenVINO for int8 exports).

Both come back as a ``Network``: a callable ``(B, C, h, w) float32 -> (B, K, h', w')`` logits on
the chosen device, plus everything prediction needs about the model (``ModelInfo``), read from
the file alone. The size contract (legal sizes, output size, activation) comes from a ``UNet``
built on the ``meta`` device: it has the configuration but no weights, so ONNX inference
allocates no PyTorch parameters.

An int8 export (``unetkit export --int8``: its metadata holds ``unetkit.int8``) runs on a CPU
with OpenVINO where it is installed (``pip install unetkit[openvino]``): its CPU plugin fuses the
quantised convolutions into VNNI / AMX-INT8 kernels, where onnxruntime runs the same file
slower than PyTorch's bf16 (figures: the benchmarks page, ``bench/predict.py --int8``).
OpenVINO compiles the network once per input shape (a static shape runs faster than a
dynamic one); the last few compiled shapes are kept.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..card import ModelCard
from ..checkpoint import Checkpoint, load_model
from ..config import ModelConfig
from ..device import autocast, resolve_device, resolve_precision
from ..errors import UnetkitError
from ..models.unet import UNet

log = logging.getLogger(__name__)

META_PREFIX = "unetkit."  # the ONNX metadata_props keys of the model card
INT8_KEY = "int8"  # metadata of an int8 export: how it was quantised and its accuracy gate
OPENVINO_SHAPES = 4  # compiled input shapes an OpenVINO network keeps

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
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast inside ``run``), or ``int8``
            (an int8 export).
        backend: what runs it: ``torch``, ``onnxruntime`` or ``openvino VERSION``.
    """

    run: Callable[[torch.Tensor], torch.Tensor]
    info: ModelInfo
    shape: UNet
    device: torch.device
    precision: str = "fp32"
    backend: str = "torch"


def _shape_model(config: ModelConfig) -> UNet:
    with torch.device("meta"):
        return UNet(config).eval()


def load_torch(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
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
    """An exported ONNX file as a ``Network``: onnxruntime (fp32; CUDA when asked for), or
    OpenVINO for an int8 export on a CPU where it is installed.

    Raises:
        UnetkitError: an unreadable file or one without unetkit metadata.
    """
    dev = resolve_device(device)
    if dev.type == "cpu" and _has_openvino():
        try:
            props = onnx_metadata(path)
        except UnetkitError:  # onnxruntime below says what is wrong, as for any ONNX file
            props = {}
        if META_PREFIX + INT8_KEY in props:
            return openvino_network(path, _card(props, path))
    providers = ["CPUExecutionProvider"]
    if dev.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    session = onnx_session(path, providers)  # one line naming the file for any failure
    props = session.get_modelmeta().custom_metadata_map
    info = _card(props, path)
    int8 = META_PREFIX + INT8_KEY in props
    if int8 and dev.type == "cpu":
        log.warning(
            "%s: an int8 model run by onnxruntime, slower than bf16 here: install OpenVINO "
            "(pip install 'unetkit[openvino]') to run it at int8 speed",
            path,
        )
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out)

    precision = "int8" if int8 else "fp32"
    shape = _shape_model(info.model_config)
    return Network(run, info, shape, torch.device("cpu"), precision, "onnxruntime")


def _card(props: dict[str, str], path: str | os.PathLike) -> ModelCard:
    info = ModelCard.from_metadata(props, str(path), prefix=META_PREFIX)
    if info.task == "regression":
        raise UnetkitError(f"{path}: a regression (image-to-image) model has no class masks")
    return info


def _text(exc: BaseException) -> str:
    """A runtime's error message on one line, cut to 160 characters (theirs run to pages)."""
    return " ".join(str(exc).split())[:160]


def _has_openvino() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` read with the ``onnx`` package (no session built).

    Raises:
        UnetkitError: a missing or unreadable file, or ``onnx`` not installed.
    """
    try:
        import onnx
    except ImportError:
        raise UnetkitError(f"{path}: reading ONNX metadata needs onnx (pip install onnx)") from None
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise UnetkitError(f"{path}: not a readable ONNX file ({_text(exc)})") from None
    return {entry.key: entry.value for entry in proto.metadata_props}


def openvino_network(path: str | os.PathLike, info: ModelInfo) -> Network:
    """An (int8) ONNX file as a ``Network`` run by OpenVINO on the CPU, compiled per input
    shape (the last ``OPENVINO_SHAPES`` kept). OpenVINO picks its own precision for the layers
    left in float (bf16 where the CPU has it), as the export's accuracy gate measured it.

    Raises:
        UnetkitError: OpenVINO cannot read or compile the file.
    """
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line text
        raise UnetkitError(f"{path}: OpenVINO cannot read this ONNX file ({_text(exc)})") from None
    compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def request(shape: tuple[int, ...]):
        if shape in compiled:
            compiled.move_to_end(shape)
            return compiled[shape]
        static = model.clone()
        static.reshape({static.inputs[0]: list(shape)})
        try:
            net = core.compile_model(static, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        except Exception as exc:
            raise UnetkitError(
                f"{path}: OpenVINO cannot compile it for {shape} ({_text(exc)})"
            ) from None
        compiled[shape] = net.create_infer_request()
        if len(compiled) > OPENVINO_SHAPES:
            compiled.popitem(last=False)
        return compiled[shape]

    def run(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = request(tuple(array.shape)).infer({0: array})[0]
        return torch.from_numpy(np.array(out))  # a copy: the request reuses its output buffer

    backend = f"openvino {ov.__version__.split('-')[0]}"
    return Network(run, info, _shape_model(info.model_config), torch.device("cpu"), "int8", backend)


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
        raise UnetkitError(f"{path}: not a readable ONNX file ({_text(exc)})") from None
