"""The model card: what a model file says about itself, in one type.

A ``ModelCard`` is read from a checkpoint (``Checkpoint.card``), from an ONNX export's
``metadata_props`` or a TorchScript export's ``unetkit.json`` (``from_metadata``), and is what
prediction, evaluation, ``unetkit info`` and export use. Fields:

    model_config    ModelConfig: the network is rebuilt from it alone
    classes         class names, index = mask value
    palette         [[r, g, b], ...] per class
    preprocessing   DataConfig: channels, normalisation, resize policy and training size
    task            multiclass | binary | regression | instance
    ignore_index    the mask value excluded from losses and metrics
    preset          the preset it started from (informational)
    objects         ObjectConfig as a dict (instance models: target and post-processing)
    split           {"train": [...], "val": [...]} image stems it was trained / validated on
    fingerprint     the training data's fingerprint (``unetkit.data.fingerprint``)

``source`` (the file it was read from) is not stored. Exports store the card of
``for_export`` as one JSON string per key (``unetkit.classes``, ...): what prediction needs and
nothing about the training data (no ``split``, no ``fingerprint``, none of the
training-only preprocessing fields in ``TRAINING_ONLY``). A file without the required keys, or
with values of the wrong kind, is refused in one line naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .config import DataConfig, ModelConfig
from .errors import UnetkitError

CARD_VERSION = 1
REQUIRED = ("classes", "palette", "preprocessing", "model_config")
_OPTIONAL = ("task", "ignore_index", "preset", "objects", "split", "fingerprint")
# DataConfig fields that only shape training (how crops are drawn, cached, masks read); the
# ``random-crop`` resize policy predicts as ``none`` (whole image or tiles, no rescaling)
TRAINING_ONLY = ("cache", "oversample", "sampling", "binary_255")


@dataclass
class ModelCard:
    """What a model file says about itself (module docstring)."""

    model_config: ModelConfig
    classes: list[str]
    palette: list[list[int]]
    preprocessing: DataConfig
    task: str = "multiclass"
    ignore_index: int = 255
    preset: str | None = None
    objects: dict | None = None
    split: dict[str, list[str]] | None = None
    fingerprint: dict | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``source`` left out)."""
        return {
            "card_version": CARD_VERSION,
            "model_config": self.model_config.to_dict(),
            "classes": list(self.classes),
            "palette": [[int(c) for c in rgb] for rgb in self.palette],
            "preprocessing": self.preprocessing.to_dict(),
            "task": self.task,
            "ignore_index": int(self.ignore_index),
            "preset": self.preset,
            "objects": self.objects,
            "split": self.split,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> ModelCard:
        """The card of ``to_dict`` output (or of older exports, which lack the optional keys).

        Raises:
            UnetkitError: required keys missing or values of the wrong kind, naming ``source``.
        """
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise UnetkitError(f"{source}: no unetkit metadata ({', '.join(missing)} missing)")
        try:
            split = data.get("split")
            return cls(
                model_config=ModelConfig.from_dict(data["model_config"]),
                classes=[str(c) for c in data["classes"]],
                palette=[[int(v) for v in rgb] for rgb in data["palette"]],
                preprocessing=DataConfig.from_dict(data["preprocessing"]),
                task=str(data.get("task") or "multiclass"),
                ignore_index=int(data.get("ignore_index", 255)),
                preset=data.get("preset"),
                objects=dict(data["objects"]) if data.get("objects") else None,
                split=({k: [str(s) for s in v] for k, v in split.items()} if split else None),
                fingerprint=data.get("fingerprint"),
                source=str(source),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnetkitError(f"{source}: malformed unetkit metadata ({exc})") from None

    def for_export(self) -> ModelCard:
        """The card an exported file carries: what prediction needs, nothing about the data.

        ``split`` and ``fingerprint`` are dropped, ``random-crop`` becomes ``none`` (both
        predict the whole image or tiles of it), ``auto`` normalisation ``fixed`` (what it
        means in prediction), gradient checkpointing off. Prediction from the exported card is
        the same as from the checkpoint's.
        """
        pre = self.preprocessing
        pre = pre.replace(
            resize="none" if pre.resize == "random-crop" else pre.resize,
            normalize="fixed" if pre.normalize == "auto" else pre.normalize,
        )
        return replace(
            self,
            model_config=self.model_config.replace(checkpointing=False),
            preprocessing=pre,
            split=None,
            fingerprint=None,
        )

    def to_export_dict(self) -> dict[str, Any]:
        """``for_export().to_dict()`` without the keys that describe training: ``split``,
        ``fingerprint`` and the ``TRAINING_ONLY`` preprocessing fields (``mean`` / ``std``
        too where the normalisation is per image and does not use them)."""
        data = self.for_export().to_dict()
        del data["split"], data["fingerprint"]
        pre = data["preprocessing"]
        for key in TRAINING_ONLY:
            pre.pop(key, None)
        if pre["normalize"] in ("image", "percentile"):
            del pre["mean"], pre["std"]
        return data

    def to_metadata(self, export: bool = False) -> dict[str, str]:
        """``{key: JSON string}``: the form ONNX ``metadata_props`` hold (keys unprefixed);
        ``export``: of ``to_export_dict`` (what exported files carry)."""
        data = self.to_export_dict() if export else self.to_dict()
        return {key: json.dumps(value) for key, value in data.items()}

    @classmethod
    def from_metadata(
        cls, props: Mapping[str, str], source: str = "", prefix: str = ""
    ) -> ModelCard:
        """The card of ``to_metadata`` output; ``prefix`` is stripped from the keys.

        Raises:
            UnetkitError: no unetkit metadata, or a value that is not valid JSON.
        """
        values = {k.removeprefix(prefix): v for k, v in props.items()}
        known = {"card_version", "format_version", *REQUIRED, *_OPTIONAL}
        try:
            data = {k: json.loads(v) for k, v in values.items() if k in known}
        except json.JSONDecodeError as exc:
            raise UnetkitError(f"{source}: malformed unetkit metadata ({exc})") from None
        return cls.from_dict(data, source)
