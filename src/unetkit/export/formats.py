"""ONNX and TorchScript files of a checkpoint: written with unetkit's metadata, checked, read back.

The exported file carries the model card of ``ModelCard.for_export`` (classes, palette,
preprocessing, task, model config, object post-processing) as JSON: ONNX in ``metadata_props``
(``unetkit.*`` keys), TorchScript in the extra file ``unetkit.json``. Nothing about the training
data travels (no image names, no data fingerprint, no training-only preprocessing fields).
Beside the card, ``unetkit.input_contract`` (``unetkit.export.contract``); ONNX files repeat it
as readable text in the graph's ``doc_string``.
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

import torch

from ..card import ModelCard
from ..checkpoint import Checkpoint, load_model
from ..errors import UnetkitError
from ..files import atomic_path
from ..infer.backends import META_PREFIX, onnx_session
from .contract import CONTRACT_KEY, contract_text, input_contract
from .parity import check_parity, runner, sample_sizes

if TYPE_CHECKING:
    from ..models.unet import UNet

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
TORCHSCRIPT_META = "unetkit.json"


def export_metadata(ckpt: Checkpoint, model: UNet | None = None) -> dict[str, str]:
    """The exported model card (``ModelCard.to_export_dict``) and the input contract
    (``input_contract``, under ``input_contract``) as ``{key: JSON string}`` (keys without the
    prefix). ``model``: the network (or one of its configuration), for the size rule."""
    meta = ckpt.card.to_metadata(export=True)
    meta[CONTRACT_KEY] = json.dumps(input_contract(ckpt.card, model))
    return meta


def parse_metadata(props: dict[str, str], source: str | os.PathLike) -> dict[str, Any]:
    """Decode ``export_metadata`` output (with or without the ``unetkit.`` prefix) into the
    card's plain data (``ModelCard.to_dict``).

    Raises:
        UnetkitError: the file has no unetkit metadata or it is not valid.
    """
    return ModelCard.from_metadata(props, str(source), prefix=META_PREFIX).to_dict()


def onnx_bytes(model: torch.nn.Module, sample: torch.Tensor, opset: int) -> bytes:
    """The ONNX graph of ``model`` traced on ``sample`` (input ``image``, output ``logits``;
    dynamic batch, height and width), before unetkit's metadata (``stamp_onnx``)."""
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

    proto = onnx.load_from_string(onnx_bytes(model, sample, opset))
    stamp_onnx(proto, ckpt, model)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _write_torchscript(model, ckpt: Checkpoint, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, sample, check_trace=False)
        meta = json.dumps({k: json.loads(v) for k, v in export_metadata(ckpt, model).items()})
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_META: meta})


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
    sizes = sample_sizes(model, ckpt)
    sample = torch.rand(1, model.config.in_channels, *sizes[0])
    out_path = Path(out_path)
    parity: list[dict[str, Any]] = []
    with atomic_path(out_path) as tmp:
        if fmt == "onnx":
            _write_onnx(model, ckpt, sample, tmp, opset)
        else:
            _write_torchscript(model, ckpt, sample, tmp)
        if check:
            parity = check_parity(model, runner(fmt, tmp), sizes, out_path)
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
