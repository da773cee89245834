"""``unetkit train`` options (+ a JSON config, + a run being resumed) -> TrainConfig."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import AugmentConfig, ModelConfig, TrainConfig, apply_overrides
from ..errors import UnetkitError
from ..models.presets import preset_config
from .rundir import RESUMABLE_CHANGES

# each option is checked alone against these defaults, so that a bad value names its option
_CHECK_BASE = TrainConfig(model=ModelConfig())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnetkitError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise UnetkitError(f"{path}: a config file must hold a JSON object")
    return data


def check_overrides(overrides: Mapping[str, Any], flag_of: Mapping[str, str]) -> None:
    """Each override alone against the defaults: a bad value is one line naming its option
    (``flag_of``: config key -> option, as in ``{"data.size": "--patch-size"}``)."""
    for key, value in overrides.items():
        try:
            apply_overrides(_CHECK_BASE, {key: value})
        except (ValueError, TypeError) as exc:
            raise UnetkitError(f"{flag_of.get(key, key)}: {exc}") from None


def build_train_config(
    dataset: Path,
    out: Path | None,
    config_file: Path | None,
    resume: Path | None,
    overrides: Mapping[str, Any],
    flag_of: Mapping[str, str],
    augment: bool | None = None,
) -> TrainConfig:
    """Defaults <- --config file <- the options given; with --resume, the saved run's config.

    Args:
        overrides: the options the user gave, as dotted TrainConfig keys
            (``{"lr": 0.01, "data.size": (256, 256), "model.depth": 3}``); model keys apply to
            the preset's config when the config file holds no model.
        augment: ``--augment`` / ``--no-augment`` (None: not given); off turns every
            augmentation off.
        flag_of: each override's option, for the messages (``{"data.size": "--patch-size"}``).

    Raises:
        UnetkitError: unreadable config, unknown keys, bad values (naming the option),
            options a resumed run cannot change.
    """
    check_overrides(overrides, flag_of)
    if resume is not None:
        cfg = load_run_config(resume)
        changed = sorted(flag_of.get(k, k) for k in overrides if k not in RESUMABLE_CHANGES)
        if augment is not None:
            changed.append("--augment" if augment else "--no-augment")
        if changed:
            raise UnetkitError(
                f"--resume: these settings cannot change in a resumed run: {', '.join(changed)}"
            )
        # the folder given is the run, and the data given is the data: never follow the
        # stored paths (the run or the data may have been moved); fit() checks that the data
        # is the same (classes and image stems) before it resumes
        return apply_overrides(cfg, {**overrides, "run_dir": str(resume), "dataset": str(dataset)})
    if out is None:
        raise UnetkitError("train needs a run folder: -o RUN_DIR")
    base = _read_json(config_file) if config_file else {}
    try:
        cfg = TrainConfig.from_dict({**base, "dataset": str(dataset), "run_dir": str(out)})
    except (ValueError, TypeError) as exc:
        raise UnetkitError(f"{config_file}: {exc}") from None
    changes = dict(overrides)
    if augment is False:
        changes["augment"] = AugmentConfig.none()
    try:
        if cfg.model is None and any(k.startswith("model.") for k in changes):
            changes["model"] = preset_config(changes.get("preset", cfg.preset))
        cfg = apply_overrides(cfg, changes)
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
