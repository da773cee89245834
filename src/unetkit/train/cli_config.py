"""``unetkit train`` flags (+ a JSON config, + a run being resumed) -> TrainConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import AugmentConfig, TrainConfig
from ..errors import UnetkitError
from ..models.presets import preset_config
from .resolve import RESUMABLE_CHANGES

_DATA_FLAGS = ("resize", "normalize")
_MODEL_FLAGS = ("base_width", "depth")
_OBJECT_FLAGS = ("boundary_width",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnetkitError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise UnetkitError(f"{path}: a config file must hold a JSON object")
    return data


def build_train_config(
    dataset: Path,
    out: Path | None,
    config_file: Path | None,
    resume: Path | None,
    flags: dict[str, Any],
) -> TrainConfig:
    """Defaults <- --config file <- explicit flags; with --resume, the saved run's config.

    Raises:
        UnetkitError: unreadable config, unknown keys, flags a resumed run cannot change.
    """
    flags = {k.rstrip("_"): v for k, v in flags.items() if v is not None}
    augment_on = flags.pop("augment", None)
    if resume is not None:
        cfg = load_run_config(resume)
        changed = sorted(k for k in flags if k not in RESUMABLE_CHANGES)
        if augment_on is not None:
            changed.append("augment" if augment_on else "no-augment")
        if changed:
            raise UnetkitError(
                f"--resume: these settings cannot change in a resumed run: {', '.join(changed)}"
            )
        # the folder given is the run, and the data given is the data: never follow the
        # stored paths (the run or the data may have been moved); fit() checks that the data
        # is the same (classes and image stems) before it resumes
        return cfg.replace(**flags, run_dir=str(resume), dataset=str(dataset))
    if out is None:
        raise UnetkitError("train needs a run folder: -o RUN_DIR")
    base = _read_json(config_file) if config_file else {}
    try:
        cfg = TrainConfig.from_dict({**base, "dataset": str(dataset), "run_dir": str(out)})
    except (ValueError, TypeError) as exc:
        raise UnetkitError(f"{config_file}: {exc}") from None
    data = {k: flags.pop(k) for k in _DATA_FLAGS if k in flags}
    if "patch_size" in flags:
        n = flags.pop("patch_size")
        data["size"] = (n, n)
    model = {k: flags.pop(k) for k in _MODEL_FLAGS if k in flags}
    objects = {k: flags.pop(k) for k in _OBJECT_FLAGS if k in flags}
    if "val_stems" in flags:
        flags["val_stems"] = tuple(s.strip() for s in flags["val_stems"].split(",") if s.strip())
    if "class_weights" in flags and flags["class_weights"] != "balanced":
        try:
            flags["class_weights"] = tuple(float(v) for v in flags["class_weights"].split(","))
        except ValueError:
            raise UnetkitError(
                f"--class-weights: 'balanced' or numbers, got {flags['class_weights']!r}"
            ) from None
    try:
        cfg = cfg.replace(**flags)
        if data:
            cfg = cfg.replace(data=cfg.data.replace(**data))
        if model:
            cfg = cfg.replace(model=(cfg.model or preset_config(cfg.preset)).replace(**model))
        if objects:
            cfg = cfg.replace(objects=cfg.objects.replace(**objects))
        if augment_on is False:
            cfg = cfg.replace(augment=AugmentConfig.none())
    except (ValueError, TypeError) as exc:
        raise UnetkitError(str(exc)) from None
    return cfg


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config saved in a run folder (for ``--resume``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UnetkitError(f"{run_dir}: not a unetkit run folder (no config.json)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UnetkitError(f"{path}: invalid config ({exc})") from None
