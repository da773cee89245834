"""``unetkit train``: every flag as its ``TrainConfig`` key, the size checked before any work."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import DataConfig, ObjectConfig, TrainConfig
from ..device import performance_setup
from ..errors import UnetkitError
from .help import config_option
from .options import parse_class_weights, parse_comma_list, parse_size_flag

_OBJECT_DEFAULTS = ObjectConfig()


def _check_train_size(cfg, patch_size: str | None) -> None:
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
        where = (
            f"--patch-size {patch_size}" if patch_size else f"training size {h}x{w} (--patch-size)"
        )
        raise UnetkitError(f"{where}: {exc}") from None


def train_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (from prepare, VOC, images/+masks/)."),
    out: Path = typer.Option(None, "-o", "--out", help="Run folder for checkpoints and logs."),
    preset: str = typer.Option(None, "--preset", help="Model preset (see `unetkit models`)."),
    config: Path = typer.Option(None, "--config", help="JSON file with TrainConfig fields."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty run folder."),
    epochs: int = config_option(TrainConfig, "epochs", "--epochs"),
    batch_size: int = config_option(TrainConfig, "batch_size", "--batch-size"),
    lr: float = config_option(TrainConfig, "lr", "--lr"),
    patch_size: str = config_option(
        DataConfig, "size", "--patch-size", help="Training patch / resize size: N or HxW."
    ),
    resize: str = config_option(
        DataConfig, "resize", "--resize", help="random-crop | letterbox | resize | none"
    ),
    normalize: str = config_option(
        DataConfig,
        "normalize",
        "--normalize",
        help="auto (from the data fingerprint) | image | percentile | dataset | fixed",
    ),
    sampling: str = config_option(
        DataConfig,
        "sampling",
        "--sampling",
        help="Crops per image per epoch: image (one) | area (one per patch-sized area).",
    ),
    base_width: int = typer.Option(None, "--base-width", help="Channels of the first level."),
    depth: int = typer.Option(None, "--depth", help="Number of down-sampling steps."),
    task: str = config_option(
        TrainConfig, "task", "--task", help="auto | multiclass | binary | instance | regression"
    ),
    boundary_width: int = typer.Option(
        None,
        "--boundary-width",
        help="--task instance: width in px of the boundary class at each object's edge.",
        show_default=str(_OBJECT_DEFAULTS.boundary_width),
    ),
    boundary_fraction: float = typer.Option(
        None,
        "--boundary-fraction",
        help="--task instance: the boundary also covers each object's pixels closer to its "
        "edge than this fraction of its inner radius (0 = off): seeds are the cores.",
        show_default=str(_OBJECT_DEFAULTS.boundary_fraction),
    ),
    instance_head: str = typer.Option(
        None,
        "--instance-head",
        help="--task instance: boundary (a boundary class at each object's edge) | distance "
        "(each object pixel's normalised distance to its edge; seeds at its maxima) | rays "
        "(that distance as object probability plus the lengths of --n-rays rays to the edge: "
        "StarDist's star-convex polygons, kept by non-maximum suppression).",
        show_default=_OBJECT_DEFAULTS.head,
    ),
    distance_weight: float = typer.Option(
        None,
        "--distance-weight",
        help="--instance-head distance / rays: the distance term's factor in the loss.",
        show_default=str(_OBJECT_DEFAULTS.distance_weight),
    ),
    n_rays: int = typer.Option(
        None,
        "--n-rays",
        help="--instance-head rays: rays per pixel, a multiple of 4 (StarDist's default).",
        show_default=str(_OBJECT_DEFAULTS.n_rays),
    ),
    rays_weight: float = typer.Option(
        None,
        "--rays-weight",
        help="--instance-head rays: the factor of the ray error (mean absolute, in pixels) in "
        "the loss (1: StarDist's balance with the distance term at its default weight).",
        show_default=str(_OBJECT_DEFAULTS.rays_weight),
    ),
    loss: str = typer.Option(
        None, "--loss", help="auto | ce | bce | dice | ce+dice | bce+dice | mse | l1"
    ),
    class_weights: str = config_option(
        TrainConfig, "class_weights", "--class-weights", help="'balanced' or w0,w1,..."
    ),
    weight_map: bool = typer.Option(
        None,
        "--weight-map/--no-weight-map",
        help="The paper's border weight map.",
        show_default="on for --task instance, else off",
    ),
    weight_map_objects: str = typer.Option(
        None, "--weight-map-objects", help="'foreground' or a class index (0 for ISBI)."
    ),
    optimizer: str = config_option(
        TrainConfig, "optimizer", "--optimizer", help="adam | adamw | sgd | rmsprop"
    ),
    momentum: float = config_option(TrainConfig, "momentum", "--momentum"),
    schedule: str = config_option(
        TrainConfig, "schedule", "--schedule", help="constant | cosine | poly | plateau"
    ),
    steps_per_epoch: int = config_option(TrainConfig, "steps_per_epoch", "--steps-per-epoch"),
    accumulate: int = config_option(
        TrainConfig, "accumulate", "--accumulate", help="Gradient accumulation steps."
    ),
    clip_grad: float = config_option(TrainConfig, "clip_grad", "--clip-grad"),
    ema: float = config_option(
        TrainConfig,
        "ema",
        "--ema",
        help="Decay of the weights' moving average that is validated and saved (0: off).",
    ),
    early_stop: int = config_option(
        TrainConfig, "early_stop", "--early-stop", help="Patience in validations."
    ),
    val_fraction: float = config_option(TrainConfig, "val_fraction", "--val-fraction"),
    val_stems: str = typer.Option(None, "--val-stems", help="Comma-separated validation stems."),
    val_every: int = config_option(TrainConfig, "val_every", "--val-every"),
    save_every: int = config_option(TrainConfig, "save_every", "--save-every"),
    time_budget: float = config_option(
        TrainConfig, "time_budget", "--time-budget", help="Minutes; stops cleanly."
    ),
    device: str = config_option(
        TrainConfig, "device", "--device", help="auto | cpu | cuda | cuda:N"
    ),
    precision: str = config_option(
        TrainConfig, "precision", "--precision", help="auto | fp32 | bf16 | fp16"
    ),
    workers: int = config_option(TrainConfig, "workers", "--workers"),
    seed: int = config_option(TrainConfig, "seed", "--seed"),
    deterministic: bool = config_option(
        TrainConfig, "deterministic", "--deterministic/--no-deterministic"
    ),
    augment: bool = typer.Option(
        None, "--augment/--no-augment", help="Augmentations on/off.", show_default="on"
    ),
    compile_: bool = config_option(
        TrainConfig, "compile", "--compile/--no-compile", help="torch.compile the model."
    ),
    sync_bn: bool = config_option(TrainConfig, "sync_bn", "--sync-bn/--no-sync-bn"),
    tensorboard: bool = config_option(TrainConfig, "tensorboard", "--tensorboard/--no-tensorboard"),
) -> None:
    """Train a U-Net on a dataset folder; writes last.pt, best.pt, history.csv, curves.png."""
    from ..train.cli_config import build_train_config
    from ..train.fit import fit

    given = {  # every option as its TrainConfig key; None: not given (the config's value)
        "preset": preset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "data.size": None if patch_size is None else parse_size_flag(patch_size, "--patch-size"),
        "data.resize": resize,
        "data.normalize": normalize,
        "data.sampling": sampling,
        "model.base_width": base_width,
        "model.depth": depth,
        "task": task,
        "objects.boundary_width": boundary_width,
        "objects.boundary_fraction": boundary_fraction,
        "objects.head": instance_head,
        "objects.distance_weight": distance_weight,
        "objects.n_rays": n_rays,
        "objects.rays_weight": rays_weight,
        "loss": loss,
        "class_weights": parse_class_weights(class_weights),
        "weight_map": weight_map,
        "weight_map_objects": weight_map_objects,
        "optimizer": optimizer,
        "momentum": momentum,
        "schedule": schedule,
        "steps_per_epoch": steps_per_epoch,
        "accumulate": accumulate,
        "clip_grad": clip_grad,
        "ema": ema,
        "early_stop": early_stop,
        "val_fraction": val_fraction,
        "val_stems": parse_comma_list(val_stems),
        "val_every": val_every,
        "save_every": save_every,
        "time_budget": time_budget,
        "device": device,
        "precision": precision,
        "workers": workers,
        "seed": seed,
        "deterministic": deterministic,
        "compile": compile_,
        "sync_bn": sync_bn,
        "tensorboard": tensorboard,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    cfg = build_train_config(dataset, out, config, resume, overrides, augment=augment)
    performance_setup()
    if resume is None:
        _check_train_size(cfg, patch_size)
    run_dir = fit(cfg, resume=resume is not None, overwrite=overwrite)
    typer.echo(f"run folder: {run_dir}  (best.pt, last.pt, history.csv, curves.png, panels/)")
