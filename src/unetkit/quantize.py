"""int8 export: post-training static quantisation of the ONNX export, calibrated on the model's
own training images, refused when it loses accuracy against full precision.

The route (``bench/predict.py --int8``): NNCF quantises the fp32 ONNX graph (QDQ nodes:
per-channel int8 weights, int8 activations, their ranges from calibration tiles) and OpenVINO
runs the result on a CPU (``unetkit.infer.backends``), fusing the quantised convolutions into
VNNI / AMX-INT8 kernels. onnxruntime reads the same file where OpenVINO is not installed.

Calibration images: the training images recorded in the checkpoint, from the dataset folder
recorded with them (``--calibrate DATASET`` names the folder where it has moved); a folder that
holds none of the recorded images is used whole. Each image is prepared exactly as prediction
prepares it (``Predictor``: channels, scaling, the normalisation with whole-image statistics,
the mirrored padding) and cut into tiles of the training size; up to ``SAMPLES`` tiles, spread
over the images.

The accuracy gate: the int8 file (run as ``unetkit predict`` runs it) and the full-precision
checkpoint (PyTorch fp32) predict the recorded validation images (of ``--calibrate``'s folder
without a recorded split: the same images as the calibration), each scored against the true
masks: mean IoU and mean Dice, and AP at IoU 0.5 for instance models, in points (x 100). A
loss of any of them beyond ``max_loss`` points refuses the export in one line and leaves no
file. The figures go into the file's metadata (``unetkit.int8``) and ``unetkit info``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import Checkpoint, load_model
from .config import PredictConfig
from .errors import UnetkitError
from .files import atomic_path
from .infer.backends import INT8_KEY, META_PREFIX, Network, _shape_model

if TYPE_CHECKING:
    from .data.layout import DatasetInfo
    from .models.unet import UNet

log = logging.getLogger(__name__)

KEEP_FLOAT = ("none", "first", "last", "ends")
SAMPLES = 128  # calibration tiles (NNCF's own default is 300: no better here, 2x slower)
MAX_LOSS = 0.5  # points of mean IoU / mean Dice / AP@0.5 the int8 model may lose
GATE_KEYS = {"mean_iou": "mean IoU", "mean_dice": "mean Dice", "ap_50": "AP@0.5"}


@dataclass
class Calibration:
    """Where the calibration and gate images come from.

    Attributes:
        info: the dataset folder.
        train: stems to calibrate on.
        gate: stems to score full precision and int8 on (they have masks).
        said: what they are, in words (messages and metadata: no path, no image names).
    """

    info: DatasetInfo
    train: list[str]
    gate: list[str]
    said: str


def find_calibration(ckpt: Checkpoint, source: str | os.PathLike, folder=None) -> Calibration:
    """The calibration and gate images of a checkpoint: its recorded split, in the dataset
    folder recorded with it or in ``folder``; a folder without the recorded images whole.

    Raises:
        UnetkitError: no folder recorded nor given, a recorded folder that is gone, or a
            folder that is not a dataset (images + masks).
    """
    from .data.layout import describe_dataset

    state = ckpt.train_state or {}
    recorded = (state.get("data") or {}).get("dataset") or (state.get("config") or {}).get(
        "dataset"
    )
    root = folder or recorded
    if not root:
        raise UnetkitError(
            f"{source}: records no training data to calibrate on; give --calibrate DATASET "
            "(a folder of images and masks)"
        )
    if not Path(root).is_dir():
        raise UnetkitError(
            f"{source}: its training data {root} is not there; give --calibrate DATASET "
            "(the folder where it is now, or another folder of images and masks)"
        )
    info = describe_dataset(root)
    split = ckpt.card.split or {}
    train = [s for s in split.get("train", []) if s in info.image_files]
    gate = [s for s in split.get("val", []) if s in info.mask_files]
    if train and gate:
        said = (
            f"calibrated on the {len(train)} training images recorded in the model, gated on "
            f"its {len(gate)} validation images"
        )
        return Calibration(info, train, gate, said)
    if train:  # nothing held out to gate on: the training images
        train = [s for s in train if s in info.mask_files]
        why = "not in that folder" if split.get("val") else "none recorded"
        said = f"calibrated and gated on the {len(train)} training images recorded in the model"
        return Calibration(info, train, train, f"{said} (validation images: {why})")
    stems = list(info.stems)
    said = f"calibrated and gated on all {len(stems)} images of the --calibrate folder" + (
        " (it holds none of the images the model records)" if split else ""
    )
    return Calibration(info, stems, stems, said)


def calibration_tiles(
    calib: Calibration, card, samples: int = SAMPLES
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Network inputs for calibration, made by ``Predictor`` itself: its tiles of the training
    size (or the whole rescaled image for ``letterbox`` / ``resize`` models), normalised as
    prediction normalises them; up to ``samples``, spread evenly over the images.

    Returns:
        ``([(1, C, h, w) float32, ...], (h, w) of the first)``.
    """
    from .data.imageio import read_image
    from .infer.predict import Predictor

    shape = _shape_model(card.model_config)
    seen: list[torch.Tensor] = []

    def record(x: torch.Tensor) -> torch.Tensor:  # the inputs prediction feeds, no network
        seen.extend(x.detach().cpu().float())
        h, w = shape.output_size((int(x.shape[-2]), int(x.shape[-1])))
        return torch.zeros(len(x), card.model_config.out_channels, h, w)

    pre = card.preprocessing
    scaled = pre.resize in ("letterbox", "resize")
    config = PredictConfig(
        device="cpu",
        strategy="auto" if scaled else "tile",
        tile=None if scaled else pre.size_or(),
        overlap=0.0,
        batch_size=1,
    )
    predictor = Predictor(Network(record, card, shape, torch.device("cpu")), config)
    per_image = max(1, math.ceil(samples / max(1, len(calib.train))))
    tiles: list[np.ndarray] = []
    for stem in calib.train:
        seen.clear()
        predictor.predict_proba(read_image(calib.info.image_files[stem], pre.channels))
        picks = np.linspace(0, len(seen) - 1, min(per_image, len(seen))).round().astype(int)
        tiles.extend(seen[int(i)].numpy()[None] for i in sorted(set(picks.tolist())))
    if len(tiles) > samples:
        keep = np.linspace(0, len(tiles) - 1, samples).round().astype(int)
        tiles = [tiles[int(i)] for i in sorted(set(keep.tolist()))]
    return tiles, tuple(int(n) for n in tiles[0].shape[-2:])  # type: ignore[return-value]


def _nncf():
    """``nncf``, quiet: its log at warnings, and its usage telemetry (sent by default unless
    a user opted out) replaced by its own stub: exporting a model reports nothing anywhere."""
    try:
        import nncf
    except ImportError:
        raise UnetkitError(
            "int8 export needs NNCF and OpenVINO: pip install 'unetkit[openvino]'"
        ) from None
    from nncf.telemetry import decorator, wrapper

    stub = wrapper.NNCFTelemetryStub()
    wrapper.telemetry = decorator.telemetry = stub
    nncf.set_log_level(logging.ERROR)
    return nncf


def float_layers(proto, keep: str) -> list[str]:
    """Names of the convolutions to leave in float: ``none``, ``first`` (the input conv),
    ``last`` (the head) or ``ends`` (both)."""
    convs = [n.name for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    picks = {"none": [], "first": convs[:1], "last": convs[-1:], "ends": [convs[0], convs[-1]]}
    return list(dict.fromkeys(picks[keep]))


def quantize_onnx(proto, tiles: list[np.ndarray], keep_float: list[str]):
    """The int8 (QDQ) version of an fp32 ONNX model by NNCF's post-training quantisation.

    Args:
        proto: the fp32 ``onnx.ModelProto`` (input ``image``).
        tiles: calibration inputs, each ``(1, C, h, w)`` float32.
        keep_float: node names left unquantised.

    Returns:
        The quantised ``onnx.ModelProto``.
    """
    nncf = _nncf()
    dataset = nncf.Dataset([{"image": t} for t in tiles])
    ignored = nncf.IgnoredScope(names=keep_float) if keep_float else None
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: stdout is the CLI's
        return nncf.quantize(proto, dataset, subset_size=len(tiles), ignored_scope=ignored)


def score(predictor, calib: Calibration) -> dict[str, float]:
    """Mean IoU and mean Dice (and AP@0.5 for instance models) of ``predictor`` on the gate
    images, in points."""
    from .infer.evaluate import score_predictor

    metrics = score_predictor(predictor, calib.info, calib.gate, objects=predictor.instance)[0]
    figures = {key: 100 * float(metrics[key] or 0.0) for key in ("mean_iou", "mean_dice")}
    if predictor.instance:
        figures["ap_50"] = 100 * float(metrics["objects"]["ap_50"] or 0.0)
    return figures


def accuracy_gate(model: UNet, card, int8_path: Path, calib: Calibration) -> dict[str, Any]:
    """Full precision (PyTorch fp32) and the int8 file (as ``predict`` runs it) on the gate
    images: ``{"images", "full", "int8", "loss", "runtime"}`` (figures in points)."""
    from .infer.backends import load_onnx, torch_network
    from .infer.predict import Predictor

    config = PredictConfig(device="cpu", precision="fp32")
    cpu = torch.device("cpu")
    full = score(Predictor(torch_network(model, card, cpu, "fp32"), config), calib)
    network = load_onnx(int8_path, "cpu")
    int8 = score(Predictor(network, config), calib)
    loss = {key: full[key] - int8[key] for key in full}
    return {"images": len(calib.gate), "full": full, "int8": int8, "loss": loss,
            "runtime": network.backend}  # fmt: skip


def gate_line(gate: dict[str, Any], max_loss: float | None = None) -> str:
    """``mean IoU 85.10 -> 84.95 (-0.15), ...`` of a gate's figures."""
    parts = [
        f"{GATE_KEYS[k]} {gate['full'][k]:.2f} -> {gate['int8'][k]:.2f} "
        f"({gate['int8'][k] - gate['full'][k]:+.2f})"
        for k in gate["full"]
    ]
    limit = f"; limit {max_loss:g} points" if max_loss is not None else ""
    return ", ".join(parts) + f" points on {gate['images']} images{limit}"


def export_int8(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    calibrate: str | os.PathLike | None = None,
    max_loss: float = MAX_LOSS,
    opset: int = 17,
    keep_float: str = "none",
    samples: int = SAMPLES,
) -> dict[str, Any]:
    """Export a checkpoint to an int8 ONNX file, calibrated and gated (module docstring).

    Args:
        checkpoint: a unetkit checkpoint (a segmentation model).
        out_path: the ``.onnx`` file to write (atomically: nothing when refused).
        calibrate: a dataset folder (images + masks) instead of the one the model records.
        max_loss: points of mean IoU / Dice / AP@0.5 int8 may lose against full precision.
        opset: ONNX opset version.
        keep_float: convolutions left in float: ``none``, ``first``, ``last`` or ``ends``.
        samples: calibration tiles.

    Returns:
        ``{"path", "format", "int8": the metadata written (calibration, gate)}``.

    Raises:
        UnetkitError: no calibration data, NNCF missing, or the gate refused (saying by how
            much).
    """
    import onnx

    from .export.formats import onnx_bytes, stamp_onnx

    if not math.isfinite(max_loss):
        raise UnetkitError(f"--max-loss must be a number of points; got {max_loss}")
    if keep_float not in KEEP_FLOAT:
        known = ", ".join(KEEP_FLOAT)
        raise UnetkitError(f"--keep-float must be one of {known}; got {keep_float!r}")
    model, ckpt = load_model(checkpoint, "cpu")
    if ckpt.task == "regression":
        raise UnetkitError(f"{checkpoint}: int8 export is for segmentation models (masks)")
    model = model.float().eval()
    card = ckpt.card.for_export()
    calib = find_calibration(ckpt, checkpoint, calibrate)
    log.info("int8: %s (%s)", calib.said, calib.info.root)  # minutes may follow: say so
    tiles, tile = calibration_tiles(calib, card, samples)
    fp32 = onnx.load_from_string(onnx_bytes(model, torch.from_numpy(tiles[0]), opset))
    kept = float_layers(fp32, keep_float)
    proto = quantize_onnx(fp32, tiles, kept)
    stamp_onnx(
        proto, ckpt, model,
        "int8 (QDQ): per-channel int8 weights, int8 activations; run with OpenVINO or "
        "onnxruntime. Calibration and accuracy: metadata key unetkit.int8.",
    )  # fmt: skip
    record: dict[str, Any] = {
        "quantizer": f"nncf {_nncf().__version__} (post-training, QDQ, per-channel weights)",
        "calibration": {
            "said": calib.said,
            "images": len(calib.train),
            "tiles": len(tiles),
            "tile": list(tile),
        },  # fmt: skip
        "kept_float": kept,
    }
    entry = proto.metadata_props.add()  # marks the file int8: predict runs it as such
    entry.key, entry.value = META_PREFIX + INT8_KEY, json.dumps(record)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        gate = accuracy_gate(model, ckpt.card, tmp, calib)
        record["gate"] = {**gate, "max_loss": max_loss}
        worst = max(gate["loss"], key=lambda k: gate["loss"][k])
        if gate["loss"][worst] > max_loss:
            raise UnetkitError(
                f"int8 refused: it loses {gate['loss'][worst]:.2f} points of "
                f"{GATE_KEYS[worst]} against full precision (limit --max-loss {max_loss:g}): "
                f"{gate_line(gate)}; nothing was written"
            )
        entry.value = json.dumps(record)
        onnx.save(proto, str(tmp))
    return {"path": str(out_path), "format": "onnx", "int8": record}
