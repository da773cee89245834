"""``unetkit train``: every flag as its ``TrainConfig`` key (one table, ``FLAGS``), the size
checked before any work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..config import DataConfig, ModelConfig, ObjectConfig, TrainConfig
from ..errors import UnetkitError
from .help import config_option
from .options import FROM_FLAGS, parse_class_weights, parse_comma_list, parse_size_flag, with_flags


def _check_train_size(cfg, given_size: tuple[int, int] | None) -> None:
    """The training size against the model's size rule (as fit() checks it), before any work."""
    import torch

    from ..models.presets import PRESETS, preset_config
    from ..models.unet import UNet
    from ..train.plan import is_regression

    if cfg.model is None and cfg.preset not in (*PRESETS, "auto"):
        return  # fit() names the unknown preset
    if tuple(cfg.data.size) == (0, 0):
        return  # the auto recipe picks a legal size
    model = cfg.model or preset_config(cfg.preset)
    (h, w), s = cfg.data.size, model.scale
    regression = is_regression(cfg)
    with torch.device("meta"):
        net = UNet(model)
    try:
        net.check_input((h // s, w // s) if regression else (h, w))
    except ValueError as exc:
        size = f"{h}" if h == w else f"{h}x{w}"
        where = f"--patch-size {size}" if given_size else f"training size {h}x{w} (--patch-size)"
        raise UnetkitError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Flag:
    """A ``train`` option that sets one ``TrainConfig`` key."""

    key: str  # dotted: "lr", "data.size", "objects.head"
    decls: str  # "--patch-size", "--tta/--no-tta"
    help: str | None = None
    kind: type = str  # what typer parses the text to
    parse: Callable[[Any], Any] | None = None  # then this, to the config's value
    shown: str | None = None  # --help's default where it is not the config field's

    @property
    def flag(self) -> str:
        """The option as errors name it: ``--compile/--no-compile`` -> --compile."""
        return self.decls.split("/")[0]

    @property
    def name(self) -> str:
        """The command's parameter: ``--patch-size`` -> patch_size."""
        return self.flag.lstrip("-").replace("-", "_")

    def option(self) -> Any:
        if self.shown is not None:
            return typer.Option(None, self.decls, help=self.help, show_default=self.shown)
        section, _, field = self.key.rpartition(".")
        return config_option(_SECTIONS[section], field, self.decls, help=self.help)


_SECTIONS = {"": TrainConfig, "data": DataConfig, "objects": ObjectConfig, "model": ModelConfig}
_PRESETS = "the preset's"

# every option that sets a config key, in --help's order; None: not given (the config's value)
FLAGS = (
    Flag("preset", "--preset", "Model preset (see `unetkit models`).", shown="auto"),
    Flag("epochs", "--epochs", kind=int),
    Flag("batch_size", "--batch-size", kind=int),
    Flag("lr", "--lr", kind=float),
    Flag(
        "data.size",
        "--patch-size",
        "Training patch / resize size: N or HxW.",
        parse=lambda text: parse_size_flag(text, "--patch-size"),
    ),
    Flag("data.resize", "--resize", "random-crop | letterbox | resize | none"),
    Flag(
        "data.normalize",
        "--normalize",
        "auto (from the data fingerprint) | image | percentile | dataset | fixed",
    ),
    Flag(
        "data.sampling",
        "--sampling",
        "Crops per image per epoch: image (one) | area (one per patch-sized area).",
    ),
    Flag(
        "model.base_width",
        "--base-width",
        "Channels of the first level.",
        kind=int,
        shown=f"{_PRESETS}; auto: 16 on a CPU, 32 on a GPU",
    ),
    Flag("model.depth", "--depth", "Number of down-sampling steps.", kind=int, shown=_PRESETS),
    Flag("task", "--task", "auto | multiclass | binary | instance | regression"),
    Flag(
        "objects.boundary_width",
        "--boundary-width",
        "--task instance: width in px of the boundary class at each object's edge.",
        kind=int,
    ),
    Flag(
        "objects.boundary_fraction",
        "--boundary-fraction",
        "--task instance: the boundary also covers each object's pixels closer to its edge "
        "than this fraction of its inner radius (0 = off): seeds are the cores.",
        kind=float,
    ),
    Flag(
        "objects.head",
        "--instance-head",
        "--task instance: boundary (a boundary class at each object's edge) | distance (each "
        "object pixel's normalised distance to its edge; seeds at its maxima) | rays (that "
        "distance as object probability plus the lengths of --n-rays rays to the edge: "
        "StarDist's star-convex polygons, kept by non-maximum suppression) | offsets (the "
        "boundary class plus each object pixel's offset from its object's centre: no seed "
        "where offsets converge, HoVer-Net's maps).",
    ),
    Flag(
        "objects.distance_weight",
        "--distance-weight",
        "--instance-head distance / rays: the distance term's factor in the loss.",
        kind=float,
    ),
    Flag(
        "objects.n_rays",
        "--n-rays",
        "--instance-head rays: rays per pixel, a multiple of 4 (StarDist's default).",
        kind=int,
    ),
    Flag(
        "objects.rays_weight",
        "--rays-weight",
        "--instance-head rays: the factor of the ray error (mean absolute, in pixels) in the "
        "loss (1: StarDist's balance with the distance term at its default weight).",
        kind=float,
    ),
    Flag(
        "objects.offsets_weight",
        "--offsets-weight",
        "--instance-head offsets: the factor of the offset error (squared, plus twice that of "
        "its gradients) in the loss.",
        kind=float,
    ),
    Flag("loss", "--loss", "auto | ce | bce | dice | ce+dice | bce+dice | mse | l1", shown="auto"),
    Flag(
        "class_weights",
        "--class-weights",
        "'balanced' or w0,w1,...",
        parse=parse_class_weights,
    ),
    Flag(
        "weight_map",
        "--weight-map/--no-weight-map",
        "The paper's border weight map.",
        kind=bool,
        shown="on for --task instance, else off",
    ),
    Flag(
        "weight_map_objects",
        "--weight-map-objects",
        "'foreground' or a class index (0 for ISBI).",
        shown="foreground",
    ),
    Flag("optimizer", "--optimizer", "adam | adamw | sgd | rmsprop"),
    Flag("momentum", "--momentum", kind=float),
    Flag("schedule", "--schedule", "constant | cosine | poly | plateau"),
    Flag("steps_per_epoch", "--steps-per-epoch", kind=int),
    Flag("accumulate", "--accumulate", "Gradient accumulation steps.", kind=int),
    Flag("clip_grad", "--clip-grad", kind=float),
    Flag(
        "ema",
        "--ema",
        "Decay of the weights' moving average that is validated and saved (0: off).",
        kind=float,
    ),
    Flag("early_stop", "--early-stop", "Patience in validations.", kind=int),
    Flag("val_fraction", "--val-fraction", kind=float),
    Flag(
        "val_stems",
        "--val-stems",
        "Comma-separated validation stems.",
        parse=parse_comma_list,
        shown="--val-fraction of the images; under 40 images a band of each",
    ),
    Flag("val_every", "--val-every", kind=int),
    Flag("save_every", "--save-every", kind=int),
    Flag("time_budget", "--time-budget", "Minutes; stops cleanly.", kind=float),
    Flag("device", "--device", "auto | cpu | cuda | cuda:N"),
    Flag("precision", "--precision", "auto | fp32 | bf16 | fp16"),
    Flag("workers", "--workers", kind=int),
    Flag("seed", "--seed", kind=int),
    Flag("deterministic", "--deterministic/--no-deterministic", kind=bool),
    Flag("compile", "--compile/--no-compile", "torch.compile the model.", kind=bool),
    Flag("sync_bn", "--sync-bn/--no-sync-bn", kind=bool),
    Flag("tensorboard", "--tensorboard/--no-tensorboard", kind=bool),
)
_BY_NAME = {flag.name: flag for flag in FLAGS}


def _overrides(values: dict[str, Any]) -> dict[str, Any]:
    """The options given, as their config keys and values (parsed)."""
    given = {_BY_NAME[name]: value for name, value in values.items() if value is not None}
    return {flag.key: flag.parse(value) if flag.parse else value for flag, value in given.items()}


@with_flags("overrides", {f.name: (f.kind, f.option()) for f in FLAGS}, _overrides)
def train_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (from prepare, VOC, images/+masks/)."),
    out: Path = typer.Option(None, "-o", "--out", help="Run folder for checkpoints and logs."),
    config: Path = typer.Option(None, "--config", help="JSON file with TrainConfig fields."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty run folder."),
    overrides: dict[str, Any] = FROM_FLAGS,
    augment: bool = typer.Option(
        None, "--augment/--no-augment", help="Augmentations on/off.", show_default="on"
    ),
) -> None:
    """Train a U-Net on a dataset folder; writes last.pt, best.pt, history.csv, curves.png."""
    from ..device import performance_setup
    from ..train.cli_config import build_train_config
    from ..train.fit import fit

    flag_of = {flag.key: flag.flag for flag in FLAGS}
    cfg = build_train_config(dataset, out, config, resume, overrides, flag_of, augment=augment)
    performance_setup()
    if resume is None:
        _check_train_size(cfg, overrides.get("data.size"))
    run_dir = fit(cfg, resume=resume is not None, overwrite=overwrite)
    typer.echo(f"run folder: {run_dir}  (best.pt, last.pt, history.csv, curves.png, panels/)")
