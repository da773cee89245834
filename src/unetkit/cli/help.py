"""What ``--help`` shows: every option's default (what decides it when it is not given).

A config flag's value None means "the config's default", and its help shows that default
(``config_option``); options with no config field take their text from ``UNSET_DEFAULTS``;
``click_command`` applies both, and drops the value placeholder of on/off flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

# What --help shows as the default of a config flag whose default is not a plain value.
_SPECIAL = {
    ("TrainConfig", "epochs"): "50, or unlimited with --time-budget",
    ("TrainConfig", "val_every"): "0 = auto",
    ("TrainConfig", "val_fraction"): "0.2 of the images; under 40: 0.2 of each image",
    ("TrainConfig", "save_every"): "0 = auto",
    ("TrainConfig", "workers"): "-1 = auto: 0 on a CPU, up to 8 on a GPU",
    ("PredictConfig", "batch_size"): "0 = auto: 1 on a CPU, up to 8 on a GPU",
    ("TrainConfig", "time_budget"): "0 = none",
    ("TrainConfig", "steps_per_epoch"): "0 = the data's",
    ("DataConfig", "size"): "auto: the median image size, up to 256 on a CPU, 512 on a GPU",
}

# what decides an option's value when it is not given (``--help`` shows it as the default)
UNSET_DEFAULTS = {
    "--resume": "a new run",
    "--tile": "auto: up to 640 on a CPU, 1024 on a GPU, as memory allows",
    "--fg-threshold": "the model's",
    "--seed-threshold": "the model's; 0.9 with --objects-between",
    "--min-size": "the model's; 10 with --objects-between",
    "--min-score": "the model's",
    "--pixel-size": "pixels",
    "--level": "full size",
    "--num-classes": "from the data",
    "--classes": "from the data",
    "--labels": "from the shapes",
    "--in-channels": "the preset's",
}


def config_option(cls: type, field: str, *decls: str, **kwargs: Any) -> Any:
    """A flag whose value None means "the config's default", with that default in ``--help``."""
    return typer.Option(None, *decls, show_default=config_default(cls, field), **kwargs)


def config_default(cls: type, field: str) -> str:
    """What ``--help`` shows as a flag's default: the config field's own default."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == field)
    value = spec.default
    if value is dataclasses.MISSING:  # a default factory
        assert spec.default_factory is not dataclasses.MISSING  # no plain default: a factory
        value = spec.default_factory()
    if (cls.__name__, field) in _SPECIAL:
        return _SPECIAL[(cls.__name__, field)]
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def click_command(app: typer.Typer) -> Any:
    """The click command behind ``app``, with on/off flags shown in ``--help`` without a
    value placeholder (typer shows ``<bool>`` as if ``--overwrite`` took a value), and a
    default shown for every option (what decides it when it is not given)."""
    command = typer.main.get_command(app)
    for sub in [command, *getattr(command, "commands", {}).values()]:
        for param in sub.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            # typer shows no default for a lone flag that is off (``--overwrite``); on/off
            # pairs show the name in effect (``no-rand-error``), config flags their own text
            lone = not getattr(param, "secondary_opts", True)
            off = getattr(param, "is_bool_flag", False) and lone and param.default is False
            if off and not isinstance(param.show_default, str):
                param.show_default = "off"
            unset = param.param_type_name == "option" and param.default is None
            if unset and not param.required and not isinstance(param.show_default, str):
                param.show_default = UNSET_DEFAULTS.get(param.opts[0], "none")

        def help_option(ctx, _make=sub.get_help_option):  # --help is made per context
            option = _make(ctx)
            if option is not None:
                option.metavar = ""
            return option

        sub.get_help_option = help_option
    return command
