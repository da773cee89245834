"""Self-describing checkpoints: the one hand-over between training and prediction.

A checkpoint is a dict of plain data and tensors (loadable with ``weights_only=True``)::

    format, format_version, unetkit_version
    model_config    ModelConfig as a dict: the model is rebuilt from it alone
    preset          the preset name it started from (informational)
    task            "multiclass" | "binary" | "regression" | "instance"
    classes         class names, index = mask value
    palette         [[r, g, b], ...] per class
    ignore_index    mask value excluded from losses and metrics
    preprocessing   DataConfig as a dict: channels, normalisation, resize policy and size
    state_dict      the model's weights (unwrapped from DDP / torch.compile at save time)
    train_state     optional: epoch, step, optimizer / scheduler / scaler states, RNG, config,
                    "data" (classes, the train / val split) and "fingerprint"
    extra           optional: "objects" (ObjectConfig of instance models)

In memory, a ``Checkpoint`` is a ``unetkit.card.ModelCard`` (``ckpt.card``: everything the
model says about itself, the one type exports and predictors use) plus what only a
checkpoint has: the weights, the training state and ``extra``. The card's split and
fingerprint are read from ``train_state`` and its ``objects`` from ``extra`` (where the file
keeps them) when the checkpoint is made or loaded. ``ckpt.classes``, ``ckpt.task``, ... are
read-only views of the card.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .card import ModelCard
from .config import DataConfig, ModelConfig
from .errors import UnetkitError
from .files import atomic_path
from .models.unet import UNet

log = logging.getLogger(__name__)

FORMAT = "unetkit-checkpoint"
FORMAT_VERSION = 1
TASKS = ("multiclass", "binary", "regression", "instance")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = cast(nn.Module, model._orig_mod)  # torch.compile
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _split_of(train_state: dict[str, Any] | None) -> dict[str, list[str]] | None:
    """The train / val image stems a training state records (``None`` when it has none)."""
    data = (train_state or {}).get("data") or {}
    if "train" not in data:
        return None
    split = {"train": list(data["train"]), "val": list(data.get("val") or [])}
    if data.get("val_regions"):  # the small-set rule: a band of these images held out
        split["val_regions"] = sorted(data["val_regions"])
    return split


def _recorded(train_state: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The card's fields a checkpoint keeps beside it: the split and fingerprint of its
    training state, the objects of ``extra``."""
    return {
        "objects": extra.get("objects"),
        "split": _split_of(train_state),
        "fingerprint": (train_state or {}).get("fingerprint"),
    }


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model card (everything needed to rebuild the model and
    preprocess its input) and the weights, plus the training state where there is one."""

    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    train_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # read-only views of the card, under the names callers have always used
    @property
    def model_config(self) -> ModelConfig:
        return self.card.model_config

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def palette(self) -> list[list[int]]:
        return self.card.palette

    @property
    def preprocessing(self) -> DataConfig:
        return self.card.preprocessing

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def ignore_index(self) -> int:
        return self.card.ignore_index

    @property
    def preset(self) -> str | None:
        return self.card.preset

    def build_model(self, device: str | torch.device = "cpu") -> UNet:
        """The model with its weights, in eval mode, on ``device``.

        The stored config is first built on the ``meta`` device (no memory) and its parameter
        names and shapes compared with the stored weights, so a file whose config declares a
        huge model without the weights for it allocates nothing.

        Raises:
            RuntimeError: the weights do not match the config (names or shapes).
        """
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in UNet(self.model_config).state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in self.state_dict.items()}
        if shapes != stored:
            missing = sorted(shapes.keys() - stored.keys())
            unexpected = sorted(stored.keys() - shapes.keys())
            wrong = sorted(k for k in shapes.keys() & stored.keys() if shapes[k] != stored[k])
            parts = [
                f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("other shapes for", wrong),
                )
                if keys
            ]
            raise RuntimeError("; ".join(parts))
        model = UNet(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()

    def to_dict(self) -> dict[str, Any]:
        """The file's dict: the card's fields at the top level (split, fingerprint and
        objects stay where ``train_state`` and ``extra`` hold them), then the weights."""
        card = self.card
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "unetkit_version": _version(),
            "model_config": card.model_config.to_dict(),
            "preset": card.preset,
            "task": card.task,
            "classes": list(card.classes),
            "palette": [[int(c) for c in rgb] for rgb in card.palette],
            "ignore_index": int(card.ignore_index),
            "preprocessing": card.preprocessing.to_dict(),
            "state_dict": self.state_dict,
            "train_state": self.train_state,
            "extra": self.extra,
        }


def _version() -> str:
    from . import __version__

    return __version__


def make_checkpoint(
    model: nn.Module,
    *,
    classes: list[str],
    palette: list[list[int]],
    preprocessing: DataConfig,
    task: str = "multiclass",
    ignore_index: int = 255,
    preset: str | None = None,
    train_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Checkpoint:
    """Describe ``model`` (unwrapped, weights copied to CPU) as a ``Checkpoint``."""
    net = unwrap(model)
    if not isinstance(net, UNet):
        raise TypeError(f"expected a UNet, got {type(net).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    extra = dict(extra or {})
    card = ModelCard(
        model_config=net.config,
        classes=list(classes),
        palette=[[int(v) for v in rgb] for rgb in palette],
        preprocessing=preprocessing,
        task=task,
        ignore_index=ignore_index,
        preset=preset,
        **_recorded(train_state, extra),
    )
    return Checkpoint(card=card, state_dict=state, train_state=train_state, extra=extra)


def _check_finite(ckpt: Checkpoint) -> None:
    for name, t in ckpt.state_dict.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UnetkitError(f"refusing to save a checkpoint with non-finite values in {name}")


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Atomically write ``ckpt`` to ``path`` (temp file, fsync, rename); returns the path.

    Raises ``UnetkitError`` if any weight is NaN or infinite: such a file is never written.
    A crash mid-save leaves the previous file at ``path`` intact.
    """
    _check_finite(ckpt)
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(ckpt.to_dict(), tmp)
    log.debug("saved checkpoint %s", path)
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = b"\x80"  # a pickle (protocol 2+): the legacy torch.save format


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _refusal(exc: pickle.UnpicklingError) -> str:
    """Why the safe unpickler refused, in a few words (torch's message is a page long)."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(
        r"Unsupported global: GLOBAL (\S+)", text
    )
    if found:
        return f"it would call {found.group(1)} when unpickled"
    found = re.search(r"WeightsUnpickler error: (.+?)(?:\n\n|$)", text, re.S)
    return f"the safe loader refused it: {_one_line(found.group(1) if found else text, 100)}"


def _read_torch_file(path: Path, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with every failure as one line naming the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UnetkitError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if not head:
        raise UnetkitError(f"{path}: not a checkpoint: empty file (0 bytes)")
    if path.suffix.lower() == ".onnx":
        raise UnetkitError(
            f"{path}: an ONNX file, not a checkpoint; this needs a unetkit checkpoint (.pt)"
        )
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise UnetkitError(
            f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": refused below
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnetkitError(
            f"{path}: refused: not a plain-data checkpoint ({_refusal(exc)}); nothing was run"
        ) from None
    except Exception as exc:  # zip, storage and unpickling errors of every type
        raise UnetkitError(
            f"{path}: not a readable checkpoint: truncated or corrupt "
            f"({type(exc).__name__}: {_one_line(str(exc))})"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``): plain data and tensors only.

    Raises ``UnetkitError`` (one line naming the file) for a missing, empty, truncated or
    unreadable file, an ONNX or other non-PyTorch file, a pickle that would run code (nothing
    is run), or a file that is not a unetkit checkpoint of a known version.
    """
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: no such checkpoint file")
    data = _read_torch_file(path, map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnetkitError(f"{path}: not a unetkit checkpoint (no '{FORMAT}' header)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise UnetkitError(
            f"{path}: checkpoint format version {version} is not supported "
            f"(this unetkit reads version {FORMAT_VERSION})"
        )
    state = data.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UnetkitError(f"{path}: malformed checkpoint (state_dict is not a dict of tensors)")
    try:
        train_state = data.get("train_state")
        extra = data.get("extra") or {}
        card = ModelCard(
            model_config=ModelConfig.from_dict(data["model_config"]),
            classes=list(data["classes"]),
            palette=[list(rgb) for rgb in data["palette"]],
            preprocessing=DataConfig.from_dict(data["preprocessing"]),
            task=data.get("task", "multiclass"),
            ignore_index=int(data.get("ignore_index", 255)),
            preset=data.get("preset"),
            **_recorded(train_state, extra),
        )
        ckpt = Checkpoint(card=card, state_dict=state, train_state=train_state, extra=extra)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnetkitError(f"{path}: malformed checkpoint ({_one_line(str(exc))})") from None
    _check_training_size(ckpt.preprocessing, path)
    return ckpt


def _check_training_size(pre: DataConfig, path: Path) -> None:
    """A training size is a tile size for prediction and export: refuse an absurd one (0x0,
    "not decided", only where the size is a tile hint rather than the network's input)."""
    from .data.imageio import max_pixels

    if tuple(pre.size) == (0, 0) and pre.resize in ("random-crop", "none"):
        return
    h, w = (int(n) for n in pre.size)
    limit = max_pixels()
    if h <= 0 or w <= 0 or (limit and h * w > limit):
        raise UnetkitError(
            f"{path}: malformed checkpoint (training size {h}x{w} is "
            f"{'empty' if h <= 0 or w <= 0 else f'over the limit of {limit:,} pixels'})"
        )


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    checkpoint: Checkpoint | None = None,
) -> tuple[UNet, Checkpoint]:
    """Rebuild the model of a checkpoint file: ``(model in eval mode, checkpoint)``.

    ``checkpoint``: the file's contents when the caller has read them already (never read
    twice); ``path`` then only names it in messages.
    """
    ckpt = checkpoint if checkpoint is not None else load_checkpoint(path)
    try:
        return ckpt.build_model(device), ckpt
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UnetkitError(
            f"{path}: weights do not match the stored config ({_one_line(str(exc))})"
        ) from None
