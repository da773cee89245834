"""Human-readable summaries: the preset table and a checkpoint's description."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import load_model
from .errors import UnetkitError
from .models.presets import PRESETS, preset_config
from .models.unet import UNet


def gflops(model: UNet, size: tuple[int, int]) -> float:
    """Forward GFLOPs (multiply-add = 2 FLOPs) for one image, counted on the meta device."""
    meta = UNet(model.config).to("meta").eval()
    x = torch.empty(1, model.config.in_channels, *size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 1e9


def preset_table(size: int = 256, **overrides) -> str:
    """A text table: preset, parameters, output size and GFLOPs for a ``size`` x ``size`` input."""
    rows = [("preset", "params", "in->out", f"output @ {size}", "GFLOPs", "legal near")]
    for name in PRESETS:
        cfg = preset_config(name, **overrides)
        with torch.device("meta"):
            model = UNet(cfg)
        params = f"{model.num_parameters():,}"
        io = f"{cfg.in_channels}->{cfg.out_channels}"
        try:
            out = model.output_size((size, size))
            outs, flops, near = f"{out[0]}x{out[1]}", f"{gflops(model, (size, size)):.1f}", "-"
        except ValueError:
            below, above = model.legal_sizes(size)
            outs, flops = "illegal", "-"
            near = "/".join(str(m) for m in (below, above) if m)
        rows.append((name, params, io, outs, flops, near))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def checkpoint_summary(path: str | Path) -> str:
    """A text description of a checkpoint (model, classes, preprocessing, training state), or
    of an exported ONNX file (``.onnx``: the unetkit metadata embedded by ``unetkit export``).

    Raises:
        UnetkitError: one line naming the file: unreadable, not a unetkit checkpoint / export,
            refused (a pickle that would run code), or weights that do not match the config.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return onnx_summary(path)
    model, ckpt = load_model(path)
    lines = [
        f"checkpoint     {path}",
        f"preset         {ckpt.preset or '-'}",
        f"task           {ckpt.task}",
        f"parameters     {model.num_parameters():,}",
        f"classes        {', '.join(f'{i}:{c}' for i, c in enumerate(ckpt.classes))}",
        f"ignore index   {ckpt.ignore_index}",
        f"preprocessing  {json.dumps(ckpt.preprocessing.to_dict())}",
        f"model config   {json.dumps(ckpt.model_config.to_dict())}",
    ]
    if ckpt.task == "instance":  # the post-processing predict applies (flags override it)
        from .config import ObjectConfig

        objects = ObjectConfig.from_dict((ckpt.extra or {}).get("objects") or {})
        lines.append(f"objects        {json.dumps(objects.to_dict())}")
    ts = ckpt.train_state
    if ts:
        keys = ("epoch", "step", "best_metric", "best_value", "metrics")
        summary = {k: ts[k] for k in keys if k in ts}
        lines.append(f"training       {json.dumps(summary, default=str)}")
        data = ts.get("data") or {}
        if "train" in data:
            lines.append(
                f"split          {len(data['train'])} train / {len(data.get('val') or [])} val "
                "images (evaluate scores the val images)"
            )
            if data.get("val_regions"):
                lines.append(
                    f"               validated on a held-out band of {len(data['val_regions'])} "
                    "training images (fewer than 40 images)"
                )
        if ts.get("fingerprint"):
            from .data.fingerprint import describe

            lines.append(describe(ts["fingerprint"], list(ckpt.classes)))
    else:
        lines.append("training       (no training state: weights only)")
    return "\n".join(lines)


def onnx_summary(path: str | Path) -> str:
    """A text description of an ONNX file written by ``unetkit export``, from its metadata."""
    from .config import DataConfig, ModelConfig
    from .export.formats import parse_metadata
    from .infer.backends import INT8_KEY, META_PREFIX, onnx_session

    path = Path(path)
    props = onnx_session(path).get_modelmeta().custom_metadata_map
    meta = parse_metadata(props, path)
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        pre = DataConfig.from_dict(meta["preprocessing"])
        classes = [str(c) for c in meta["classes"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnetkitError(f"{path}: malformed unetkit metadata ({exc})") from None
    with torch.device("meta"):
        params = UNet(config).num_parameters()
    return "\n".join(
        [
            f"onnx file      {path}",
            f"preset         {meta.get('preset') or '-'}",
            f"task           {meta.get('task', 'multiclass')}",
            f"parameters     {params:,}",
            f"classes        {', '.join(f'{i}:{c}' for i, c in enumerate(classes))}",
            f"ignore index   {meta.get('ignore_index', 255)}",
            f"preprocessing  {json.dumps(pre.to_dict())}",
            f"model config   {json.dumps(config.to_dict())}",
            "training       (an exported model: no training state)",
            *_int8_lines(props.get(META_PREFIX + INT8_KEY), path),
        ]
    )


def _int8_lines(raw: str | None, path: Path) -> list[str]:
    """What an int8 export says about its quantisation and its accuracy gate."""
    if raw is None:
        return []
    from .quantize import gate_line

    try:
        record = json.loads(raw)
        calib, gate = record["calibration"], record["gate"]
        kept = ", ".join(record.get("kept_float") or []) or "none"
        return [
            f"int8           {record['quantizer']}; layers kept in float: {kept}",
            f"calibration    {calib['tiles']} tiles of {calib['tile'][0]}x{calib['tile'][1]}: "
            f"{calib['said']}",
            f"int8 accuracy  {gate_line(gate, gate.get('max_loss'))} (full precision -> int8; "
            f"run by {gate['runtime']})",
        ]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UnetkitError(f"{path}: malformed unetkit.int8 metadata ({exc})") from None
