"""Export a checkpoint to ONNX or TorchScript, with its metadata, and prove the export right.

The exported file carries everything prediction needs (classes, palette, preprocessing, task,
model config) as JSON: ONNX in ``metadata_props`` (``unetkit.*`` keys), TorchScript in the extra
file ``unetkit.json``. Before the file is renamed into place, a parity check runs it against the
PyTorch model on random inputs of two sizes (a small legal one and the training size); a failed
check leaves no file behind.
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
MAX_LOGIT_DIFF = 1e-4
MIN_AGREEMENT = 0.9999


def export_metadata(ckpt: Checkpoint) -> dict[str, str]:
    """The checkpoint's model card as ``{key: JSON string}`` (keys without the prefix)."""
    return ckpt.card.to_metadata()


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


def _write_onnx(model, ckpt: Checkpoint, sample: torch.Tensor, path: Path, opset: int) -> None:
    import onnx

    proto = onnx.load_from_string(_onnx_bytes(model, sample, opset))
    for key, value in export_metadata(ckpt).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    proto.producer_name = "unetkit"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _write_torchscript(model, ckpt: Checkpoint, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, sample, check_trace=False)
        meta = json.dumps({k: json.loads(v) for k, v in export_metadata(ckpt).items()})
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
        log.info("parity %dx%d: max |diff| %.2e, agreement %.4f %%", h, w, diff, 100 * agree)
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
        raise UnetkitError(f"export format must be one of {', '.join(FORMATS)}; got {fmt!r}")
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
    log.info("exported %s to %s", checkpoint, out_path)
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
