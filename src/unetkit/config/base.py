"""The engine every config class shares: one strict check of values (``coerce``) used by
``from_dict`` and ``apply_overrides``, the field checks of ``__post_init__``, ``parse_size``.

Every run prints its resolved configuration and every checkpoint stores it (``to_dict``), so
a model can be rebuilt and a run resumed from plain data alone.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", bound="_Config")


def _check_choices(cfg: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """Each field named in ``choices`` one of its choices."""
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_min(cfg: Any, names: tuple[str, ...], low: float, strict: bool = False) -> None:
    """Each field ``>= low`` (``> low`` when ``strict``); NaN never passes."""
    for name in names:
        value = getattr(cfg, name)
        if not (value > low if strict else value >= low):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}; got {value}")


def _check_range(name: str, value: float, low: float, high: float, closed: bool = False) -> None:
    """``low <= value < high`` (``<= high`` when ``closed``); NaN never passes."""
    if not (low <= value <= high if closed else low <= value < high):
        raise ValueError(
            f"{name} must be in [{low:g}, {high:g}{']' if closed else ')'}; got {value}"
        )


def parse_size(text: str, name: str = "size") -> tuple[int, int]:
    """``"512"`` -> (512, 512), ``"512x384"`` -> (512, 384); ``ValueError`` names ``name``."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"{name} must be N or HxW (e.g. 512 or 512x384); got {text!r}")
    return parts[0], parts[-1]


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as a field annotated ``annotation`` holds it; the one check of every config
    value read from plain data (``from_dict``) or given as an override (``apply_overrides``).

    JSON has no tuples and no configs, so lists become tuples (length and items checked),
    dicts nested configs (their keys named ``key.field`` in errors) and integers floats where
    a float is expected (NumPy numbers become Python ones). Nothing else is converted: a bool
    is not a number, a float is not an int, a string is not a tuple.

    Raises:
        ValueError: ``"KEY: expected TYPE; got VALUE"``, one line.
    """
    fits, typed = _typed(value, annotation, key)
    if not fits:
        raise ValueError(f"{key}: expected {_type_name(annotation)}; got {value!r}")
    return typed


def _typed(value: Any, annotation: Any, key: str) -> tuple[bool, Any]:
    """(fits, the value converted); a union takes its first member that fits."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            fits, typed = _typed(value, arg, key)
            if fits:
                return True, typed
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        elif len(args) != len(value):
            return False, value
        else:
            items = list(args)
        checked = [_typed(v, a, key) for v, a in zip(value, items, strict=True)]
        return all(ok for ok, _ in checked), tuple(v for _, v in checked)
    if isinstance(annotation, type) and issubclass(annotation, _Config):
        if isinstance(value, annotation):
            return True, value
        if isinstance(value, Mapping):
            return True, annotation._build(value, f"{key}.")
        return False, value
    if isinstance(value, bool) and annotation in (int, float):
        return False, value
    if annotation is float:  # numpy's numbers too, as plain Python ones (to_dict needs them)
        fits = isinstance(value, numbers.Real)
        return fits, float(value) if fits else value
    if annotation is int:
        fits = isinstance(value, numbers.Integral)
        return fits, int(value) if fits else value
    return isinstance(annotation, type) and isinstance(value, annotation), value


def _type_name(annotation: Any) -> str:
    """``tuple[int, int]``, ``int | None``, ``ModelConfig | None``: as written in the class."""
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if args:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return str(getattr(annotation, "__name__", annotation))


class _Config:
    """Mixin: strict construction from dicts, conversion to plain dicts, pretty printing."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Build from a dict (``to_dict`` output, a JSON config): unknown keys raise
        ``ValueError`` listing the valid ones, values of the wrong type one naming the key
        (``coerce``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: expected a dict; got a {type(data).__name__}")
        return cls._build(data, "")

    @classmethod
    def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, int, float, bool, None) safe for JSON and checkpoints."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def pretty(self) -> str:
        """Indented JSON, as printed at the start of every run."""
        return json.dumps(self.to_dict(), indent=2)


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """A copy of ``config`` with dotted fields set: ``{"lr": 0.01, "data.size": (256, 256)}``.

    Each value is checked against its field's type as ``from_dict`` checks it (``coerce``:
    ints are accepted for floats, lists for tuples, dicts for nested configs), and the result
    is validated again as it is built, as ``replace`` does. A nested config that is None
    (``TrainConfig.model`` before it is resolved) must be set before its fields are.

    Raises:
        ValueError: one line naming the key: an unknown key, a value of the wrong type
            (with the expected type), a nested key under a field that is not a config, or a
            value the config's own checks refuse.
    """
    return _apply(config, overrides, "")


def _apply(config: T, overrides: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        name, _, rest = key.partition(".")
        if name not in names:
            raise ValueError(
                f"unknown key {prefix}{key}: {type(config).__name__} has no field {name!r}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        if rest:
            nested.setdefault(name, {})[rest] = value
        else:
            changes[name] = coerce(value, hints[name], f"{prefix}{name}")
    for name, inner in nested.items():
        current = changes.get(name, getattr(config, name))
        if not isinstance(current, _Config):
            what = "None (set it first)" if current is None else f"a {type(current).__name__}"
            key = f"{prefix}{name}.{next(iter(inner))}"
            raise ValueError(f"{key}: {prefix}{name} is {what}, not a config")
        changes[name] = _apply(current, inner, f"{prefix}{name}.")
    return config.replace(**changes) if changes else config
