"""The ``unetkit`` command line: each command a thin adapter over library functions.

Errors in the user's input print one line on stderr and exit with code 2 (a traceback only
with ``--debug``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from .config import DataConfig, ObjectConfig, PredictConfig, TrainConfig
from .device import performance_setup
from .errors import UnetkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="U-Net segmentation: labelme folder -> dataset -> model -> masks, overlays, metrics.",
)


def _option(cls, field: str, *decls: str, **kwargs):
    """A flag whose value None means "the config's default", with that default in ``--help``."""
    return typer.Option(None, *decls, show_default=_default(cls, field), **kwargs)


def _default(cls, field: str) -> str:
    """What ``--help`` shows as a flag's default: the config field's own default."""
    import dataclasses

    spec = next(f for f in dataclasses.fields(cls) if f.name == field)
    value = spec.default
    if value is dataclasses.MISSING:  # a default factory
        assert spec.default_factory is not dataclasses.MISSING  # no plain default: a factory
        value = spec.default_factory()
    special = {
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
    if (cls.__name__, field) in special:
        return special[(cls.__name__, field)]
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _print_version(value: bool) -> None:
    """``--version``: the installed package's version (its metadata, from pyproject.toml)."""
    if value:
        from . import __version__

        typer.echo(f"unetkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks for errors (also after the command's name)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    del debug, version  # debug is read by main() before the app runs; version is eager
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# models, info (foundation)
# ---------------------------------------------------------------------------------------------
@app.command("models")
def models_cmd(
    size: int = typer.Option(256, "--size", help="Square input size for the table."),
    in_channels: int = typer.Option(None, "--in-channels", help="Override input channels."),
    num_classes: int = typer.Option(None, "--num-classes", help="Override classes/outputs."),
) -> None:
    """List the model presets: parameters, output size and GFLOPs for a --size input."""
    from .summary import preset_table

    overrides = {}
    if in_channels is not None:
        overrides["in_channels"] = in_channels
    if num_classes is not None:
        overrides["out_channels"] = num_classes
    typer.echo(preset_table(size, **overrides))


@app.command("info")
def info_cmd(checkpoint: Path = typer.Argument(..., help="A unetkit checkpoint (.pt).")) -> None:
    """Show a checkpoint's model config, classes, preprocessing and training state."""
    from .summary import checkpoint_summary

    typer.echo(checkpoint_summary(checkpoint))


# ---------------------------------------------------------------------------------------------
# data commands (prepare, verify) go below this line
# ---------------------------------------------------------------------------------------------
def _parse_roi(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (3, 4) or (len(values) == 4 and not values[3].is_integer()):
        raise UnetkitError(
            f"--crop-roi must be THRESHOLD,MIN_AREA,MAX_AREA[,MARGIN] (MARGIN whole pixels); "
            f"got {text!r}"
        )
    return values[:3] + tuple(int(v) for v in values[3:])  # a pixel margin slices the image


@app.command("prepare")
def prepare_cmd(
    labelme_dir: Path = typer.Argument(
        ..., help="Folder of labelme JSON files (searched recursively)."
    ),
    out_dir: Path = typer.Argument(..., help="Dataset folder to create."),
    labels: str = typer.Option(
        None, "--labels", help="Labels file (labelme's labels.txt) or a comma-separated list."
    ),
    val_fraction: float = typer.Option(
        0.2,
        "--val-fraction",
        help="Share of images for validation (0.2 on under 40 images: none; train then "
        "validates on a band of each).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val split."),
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Accept imagePath values outside LABELME_DIR."
    ),
    crop_roi: str = typer.Option(
        None,
        "--crop-roi",
        help="THRESHOLD,MIN_AREA,MAX_AREA[,MARGIN]: crop each image to its thresholded ROI.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT_DIR."),
) -> None:
    """Convert a labelme folder into a dataset: images/, masks/, overlays/, classes, split."""
    from .data.prepare import prepare

    report = prepare(
        labelme_dir,
        out_dir,
        labels=labels,
        val_fraction=val_fraction,
        seed=seed,
        allow_outside=allow_outside,
        crop_roi=_parse_roi(crop_roi),
        overwrite=overwrite,
    )
    shares = ", ".join(f"{c} {s:.1%}" for c, s in zip(report.classes, report.class_share))
    typer.echo(f"wrote {report.n_images} images to {report.out_dir}")
    typer.echo(f"classes: {', '.join(f'{i}={c}' for i, c in enumerate(report.classes))}")
    typer.echo(f"pixel share: {shares}")
    typer.echo(f"split: {len(report.split['train'])} train, {len(report.split['val'])} val")
    if report.split_note:
        typer.echo(f"  ({report.split_note})")
    typer.echo(f"objects: {report.n_objects} (one per shape or group_id) in instances/")
    for message in report.warnings:
        typer.echo(f"warning: {message}")


@app.command("verify")
def verify_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (prepare output, VOC, imgs/+masks/)."),
    mask_suffix: str = typer.Option(
        None, "--mask-suffix", help="Mask name suffix for imgs/ + masks/ (e.g. _mask)."
    ),
) -> None:
    """Check a dataset folder and list every problem; exit 2 when there are errors."""
    from .data.verify import check_dataset, format_findings

    report = check_dataset(dataset, mask_suffix=mask_suffix)
    findings = report.findings
    typer.echo(format_findings(findings, dataset, report))
    if any(f.level == "error" for f in findings):
        raise typer.Exit(2)


# ---------------------------------------------------------------------------------------------
# training commands (train) go below this line
# ---------------------------------------------------------------------------------------------
_OBJECT_DEFAULTS = ObjectConfig()


def _comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ("a", "b"); None stays None (not given)."""
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def _class_weights(text: str | None) -> tuple[float, ...] | str | None:
    """``--class-weights``: 'balanced' or numbers w0,w1,...; None stays None (not given)."""
    if text is None or text == "balanced":
        return text
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UnetkitError(f"--class-weights: 'balanced' or numbers, got {text!r}") from None


def _size_option(text: str, flag: str) -> tuple[int, int]:
    """A size flag's N or HxW -> (H, W); a bad value is one line naming ``flag``."""
    from .config import parse_size

    try:
        return parse_size(text, flag)
    except ValueError as exc:
        raise UnetkitError(str(exc)) from None


def _check_train_size(cfg, patch_size: str | None) -> None:
    """The training size against the model's size rule (as fit() checks it), before any work."""
    import torch

    from .models.presets import PRESETS, preset_config
    from .models.unet import UNet
    from .train.plan import REGRESSION_PRESETS

    if cfg.model is None and cfg.preset not in (*PRESETS, "auto"):
        return  # fit() names the unknown preset
    if tuple(cfg.data.size) == (0, 0):
        return  # the auto recipe picks a legal size
    model = cfg.model or preset_config(cfg.preset)
    (h, w), s = cfg.data.size, model.scale
    regression = cfg.task == "regression" or (
        cfg.task == "auto" and cfg.preset in REGRESSION_PRESETS
    )
    with torch.device("meta"):
        net = UNet(model)
    try:
        net.check_input((h // s, w // s) if regression else (h, w))
    except ValueError as exc:
        where = (
            f"--patch-size {patch_size}" if patch_size else f"training size {h}x{w} (--patch-size)"
        )
        raise UnetkitError(f"{where}: {exc}") from None


@app.command("train")
def train_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (from prepare, VOC, images/+masks/)."),
    out: Path = typer.Option(None, "-o", "--out", help="Run folder for checkpoints and logs."),
    preset: str = typer.Option(None, "--preset", help="Model preset (see `unetkit models`)."),
    config: Path = typer.Option(None, "--config", help="JSON file with TrainConfig fields."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty run folder."),
    epochs: int = _option(TrainConfig, "epochs", "--epochs"),
    batch_size: int = _option(TrainConfig, "batch_size", "--batch-size"),
    lr: float = _option(TrainConfig, "lr", "--lr"),
    patch_size: str = _option(
        DataConfig, "size", "--patch-size", help="Training patch / resize size: N or HxW."
    ),
    resize: str = _option(
        DataConfig, "resize", "--resize", help="random-crop | letterbox | resize | none"
    ),
    normalize: str = _option(
        DataConfig,
        "normalize",
        "--normalize",
        help="auto (from the data fingerprint) | image | percentile | dataset | fixed",
    ),
    sampling: str = _option(
        DataConfig,
        "sampling",
        "--sampling",
        help="Crops per image per epoch: image (one) | area (one per patch-sized area).",
    ),
    base_width: int = typer.Option(None, "--base-width", help="Channels of the first level."),
    depth: int = typer.Option(None, "--depth", help="Number of down-sampling steps."),
    task: str = _option(
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
    class_weights: str = _option(
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
    optimizer: str = _option(
        TrainConfig, "optimizer", "--optimizer", help="adam | adamw | sgd | rmsprop"
    ),
    momentum: float = _option(TrainConfig, "momentum", "--momentum"),
    schedule: str = _option(
        TrainConfig, "schedule", "--schedule", help="constant | cosine | poly | plateau"
    ),
    steps_per_epoch: int = _option(TrainConfig, "steps_per_epoch", "--steps-per-epoch"),
    accumulate: int = _option(
        TrainConfig, "accumulate", "--accumulate", help="Gradient accumulation steps."
    ),
    clip_grad: float = _option(TrainConfig, "clip_grad", "--clip-grad"),
    ema: float = _option(
        TrainConfig,
        "ema",
        "--ema",
        help="Decay of the weights' moving average that is validated and saved (0: off).",
    ),
    early_stop: int = _option(
        TrainConfig, "early_stop", "--early-stop", help="Patience in validations."
    ),
    val_fraction: float = _option(TrainConfig, "val_fraction", "--val-fraction"),
    val_stems: str = typer.Option(None, "--val-stems", help="Comma-separated validation stems."),
    val_every: int = _option(TrainConfig, "val_every", "--val-every"),
    save_every: int = _option(TrainConfig, "save_every", "--save-every"),
    time_budget: float = _option(
        TrainConfig, "time_budget", "--time-budget", help="Minutes; stops cleanly."
    ),
    device: str = _option(TrainConfig, "device", "--device", help="auto | cpu | cuda | cuda:N"),
    precision: str = _option(
        TrainConfig, "precision", "--precision", help="auto | fp32 | bf16 | fp16"
    ),
    workers: int = _option(TrainConfig, "workers", "--workers"),
    seed: int = _option(TrainConfig, "seed", "--seed"),
    deterministic: bool = _option(
        TrainConfig, "deterministic", "--deterministic/--no-deterministic"
    ),
    augment: bool = typer.Option(
        None, "--augment/--no-augment", help="Augmentations on/off.", show_default="on"
    ),
    compile_: bool = _option(
        TrainConfig, "compile", "--compile/--no-compile", help="torch.compile the model."
    ),
    sync_bn: bool = _option(TrainConfig, "sync_bn", "--sync-bn/--no-sync-bn"),
    tensorboard: bool = _option(TrainConfig, "tensorboard", "--tensorboard/--no-tensorboard"),
) -> None:
    """Train a U-Net on a dataset folder; writes last.pt, best.pt, history.csv, curves.png."""
    from .train.cli_config import build_train_config
    from .train.fit import fit

    given = {  # every option as its TrainConfig key; None: not given (the config's value)
        "preset": preset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "data.size": None if patch_size is None else _size_option(patch_size, "--patch-size"),
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
        "class_weights": _class_weights(class_weights),
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
        "val_stems": _comma_list(val_stems),
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


# ---------------------------------------------------------------------------------------------
# prediction commands (predict, evaluate, export) go below this line
# ---------------------------------------------------------------------------------------------
_STRATEGY_HELP = "auto | full | letterbox | resize | tile"


# The inference flags, declared once: predict and evaluate take the same ones.
_STRATEGY = _option(PredictConfig, "strategy", "--strategy", help=_STRATEGY_HELP)
_TILE = typer.Option(None, "--tile", help="Tile size N or HxW.")
_OVERLAP = _option(PredictConfig, "overlap", "--overlap", help="Tile overlap in [0, 1).")
_BLEND = _option(PredictConfig, "blend", "--blend", help="gaussian | constant")
_BATCH = _option(PredictConfig, "batch_size", "--batch-size", help="Tiles per forward pass.")
_TTA = _option(PredictConfig, "tta", "--tta/--no-tta", help="Flip test-time augmentation.")
_THRESHOLD = _option(
    PredictConfig, "threshold", "--threshold", help="Binary models: foreground cut."
)
_DEVICE = _option(PredictConfig, "device", "--device", help="auto | cpu | cuda | cuda:N")
_PRECISION = _option(PredictConfig, "precision", "--precision", help="auto | fp32 | bf16 | fp16")
_FG_THRESHOLD = typer.Option(
    None, "--fg-threshold", help="Instance models: object pixels where 1 - p(bg) > T."
)
_SEED_THRESHOLD = typer.Option(
    None,
    "--seed-threshold",
    help="Watershed seeds: instance models where p(interior) > T (the distance head seeds at "
    "the h-maxima of its smoothed distance instead); --objects-between where 1 - p(class) > T.",
)
_MIN_SIZE = typer.Option(
    None, "--min-size", help="Instance models: drop smaller objects (--objects-between: seeds)."
)
_MIN_SCORE = typer.Option(
    None,
    "--min-score",
    help="Instance models: drop objects whose mean 1 - p(bg) is under S.",
)
_FILL_HOLES = typer.Option(
    None,
    "--fill-holes/--no-fill-holes",
    help="Instance models: fill holes in objects.",
    show_default="the model's",
)
_PROB_THRESH = typer.Option(
    None,
    "--prob-thresh",
    help="Rays-head instance models: pixels whose object probability exceeds P propose "
    "their polygons.",
)
_NMS_THRESH = typer.Option(
    None,
    "--nms-thresh",
    help="Rays-head instance models: drop a polygon covering more than this share of a "
    "better one (or of itself).",
)
_OBJECTS_BETWEEN = typer.Option(
    None,
    "--objects-between",
    help="Semantic models: objects are the regions this class (name or index) separates, "
    "e.g. cells between membranes (seeded watershed; --seed-threshold default 0.9, "
    "--min-size 10).",
)
_INFER_FLAGS = (
    "strategy", "tile", "overlap", "blend", "batch_size", "tta", "threshold", "device",
    "precision", "fg_threshold", "seed_threshold", "min_size", "min_score", "fill_holes",
    "prob_thresh", "nms_thresh", "objects_between",
)  # fmt: skip


def _predict_config(**flags):
    """A PredictConfig from CLI flags (``tile`` as 'N' or 'HxW'); None flags keep defaults.

    Checked before any model or image is read: a bad value is one line naming its flag.
    """
    from .config import PredictConfig, parse_size

    flags = {k: v for k, v in flags.items() if v is not None}
    for name, value in flags.items():
        flag = f"--{name.replace('_', '-')}"
        try:
            if name == "tile":
                value = flags["tile"] = parse_size(value, flag)
            PredictConfig(**{name: value})
        except ValueError as exc:
            raise UnetkitError(str(exc) if name == "tile" else f"{flag}: {exc}") from None
    return PredictConfig(**flags)


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) or exported ONNX file (.onnx)."),
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    strategy: str = _STRATEGY,
    tile: str = _TILE,
    overlap: float = _OVERLAP,
    blend: str = _BLEND,
    batch_size: int = _BATCH,
    tta: bool = _TTA,
    threshold: float = _THRESHOLD,
    min_area: int = _option(
        PredictConfig, "min_area", "--min-area", help="Skip contours under N pixels."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    fg_threshold: float = _FG_THRESHOLD,
    seed_threshold: float = _SEED_THRESHOLD,
    min_size: int = _MIN_SIZE,
    min_score: float = _MIN_SCORE,
    fill_holes: bool = _FILL_HOLES,
    prob_thresh: float = _PROB_THRESH,
    nms_thresh: float = _NMS_THRESH,
    objects_between: str = _OBJECTS_BETWEEN,
    objects: bool = typer.Option(
        False,
        "--objects",
        help="Semantic models: also objects (connected components); instance models always.",
    ),
    pixel_size: float = typer.Option(
        None,
        "--pixel-size",
        help="Physical size of a pixel in --pixel-unit (default: the TIFF's OME / ImageJ / "
        "resolution metadata): object areas and lengths in those units, and the masks' "
        "resolution / OME-Zarr scale. Implies objects for images read whole only.",
    ),
    pixel_unit: str = typer.Option(
        "um", "--pixel-unit", help="Unit of --pixel-size: nm, um, mm, cm or m."
    ),
    geojson: bool = typer.Option(False, "--geojson", help="Objects: NAME.geojson (QuPath)."),
    coco: bool = typer.Option(False, "--coco", help="Objects: coco.json for the folder."),
    coco_format: str = typer.Option(
        "rle",
        "--coco-format",
        help="coco.json segmentations: rle (exact, holes kept) or polygon (pixel-edge "
        "outlines; an object's holes are filled).",
    ),
    save_probs: bool = typer.Option(False, "--save-probs", help="Write NAME_probs.npy (fp16)."),
    labelme: bool = typer.Option(
        False, "--labelme", help="Write NAME.json labelme polygons (one per object with objects)."
    ),
    legend: bool = typer.Option(
        False, "--legend", help="Overlays: a legend strip of the classes present (wider PNG)."
    ),
    level: int = typer.Option(
        None,
        "--level",
        help="TIFF inputs: predict this pyramid level (0 = full size), read by region.",
    ),
    skip_background: str = typer.Option(
        None,
        "--skip-background",
        help="Images read by region: bright | dark: skip tiles of background only, brighter "
        "(or darker) than an Otsu threshold of the preview; they are class 0.",
    ),
    zarr: bool = typer.Option(
        False,
        "--zarr",
        help="Images read by region: write the mask as NAME.ome.zarr (OME-NGFF 0.4 multiscale "
        "label image) instead of NAME.tif; images read whole are not affected.",
    ),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep finished outputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Predict masks, colour masks and overlays (+ summary.csv) for images of any size.

    Under torchrun the ranks share the images (and the strips of images read by region).
    """
    from .infer.outputs import predict_paths
    from .infer.predict import Predictor
    from .infer.shard import join, rank_device

    flags = dict(locals())
    cfg = _predict_config(**{k: flags[k] for k in (*_INFER_FLAGS, "min_area")})
    if pixel_size is not None and not pixel_size > 0:
        raise UnetkitError(f"--pixel-size must be > 0; got {pixel_size}")
    from .checkpoint import load_checkpoint

    performance_setup()
    ckpt = None if model.suffix.lower() == ".onnx" else load_checkpoint(model)  # read once
    shard = join(cfg.device)  # torchrun: this rank's share of the work (unetkit.infer.shard)
    if ckpt is not None and ckpt.task == "regression":
        if shard.enabled:
            raise UnetkitError(f"{model}: restoration models predict in one process only")
        from .infer.restore import Restorer, restore_paths

        tiling = {"overlap": cfg.overlap, "blend": cfg.blend, "batch_size": cfg.batch_size}
        if cfg.tile is not None or cfg.strategy == "full":  # else tiles of the training size
            tiling["tile"] = cfg.tile
        restorer = Restorer.from_checkpoint(model, cfg.device, cfg.precision, ckpt, **tiling)
        report = restore_paths(
            restorer, inputs, out, skip_existing=skip_existing, progress=progress
        )
        typer.echo(f"{len(report.written)} restored, {len(report.failed)} failed -> {out}")
        if report.failed:
            raise typer.Exit(2)
        return
    predictor = Predictor.load(model, cfg, rank_device(cfg.device, shard), ckpt)
    report = predict_paths(
        predictor, inputs, out, save_probs=save_probs, labelme=labelme,
        skip_existing=skip_existing, progress=progress,
        objects=(objects or objects_between is not None) or None,
        pixel_size=pixel_size, pixel_unit=pixel_unit, geojson=geojson, coco=coco,
        coco_format=coco_format, legend=legend, level=level,
        background=skip_background, zarr=zarr, shard=shard,
    )  # fmt: skip
    if shard.is_main:  # the report is the whole run's on every rank
        typer.echo(
            f"{len(report.written)} predicted, {len(report.skipped)} skipped (existing), "
            f"{len(report.failed)} failed -> {out}"
        )
    if report.failed:
        raise typer.Exit(2)


_RAND_ERROR = typer.Option(
    False,
    "--rand-error/--no-rand-error",
    help="Also the ISBI 2012 adapted Rand error (2-class membrane tasks, membrane = class 1; "
    "with --objects-between: of the regions against the true ones).",
)


def _print_metrics(metrics: dict, out: Path) -> None:
    shown = ("mean_iou", "mean_dice", "pixel_accuracy", "pixel_error", "adapted_rand_error")
    for key in shown:
        if metrics.get(key) is not None:
            typer.echo(f"{key:20s} {metrics[key]:.4f}")
    objects = metrics.get("objects") or {}
    for key in ("map", "ap_50", "pq", "f1_50"):
        value = objects.get(key)
        if isinstance(value, float):
            typer.echo(f"objects {key:12s} {value:.4f}")
    if objects.get("n_true") is not None:  # what a count can be trusted by
        typer.echo(
            f"objects count        {objects['n_pred']} predicted / {objects['n_true']} true, "
            f"{objects['merges']} merges, {objects['splits']} splits"
        )
    typer.echo(f"report: {out} (metrics.json, per_image.csv, confusion.csv, confusion.png)")


@app.command("evaluate")
def evaluate_cmd(
    first: Path = typer.Argument(..., help="MODEL: a checkpoint (.pt) or an ONNX export."),
    second: Path = typer.Argument(..., help="DATASET folder (images/ + masks/)."),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    split: str = typer.Option("auto", "--split", help="auto (val if defined) | all | NAME."),
    strategy: str = _STRATEGY,
    tile: str = _TILE,
    overlap: float = _OVERLAP,
    blend: str = _BLEND,
    batch_size: int = _BATCH,
    tta: bool = _TTA,
    threshold: float = _THRESHOLD,
    device: str = _DEVICE,
    precision: str = _PRECISION,
    fg_threshold: float = _FG_THRESHOLD,
    seed_threshold: float = _SEED_THRESHOLD,
    min_size: int = _MIN_SIZE,
    min_score: float = _MIN_SCORE,
    fill_holes: bool = _FILL_HOLES,
    prob_thresh: float = _PROB_THRESH,
    nms_thresh: float = _NMS_THRESH,
    objects_between: str = _OBJECTS_BETWEEN,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    rand_error: bool = _RAND_ERROR,
) -> None:
    """Score a model on the images of a dataset it did not train on: metrics + report."""
    from .infer.evaluate import evaluate_model

    if first.is_dir():
        raise UnetkitError(
            f"{first}: a folder, not a model; to score predicted masks against true masks "
            f"use `unetkit compare {first} {second} -o {out}`"
        )
    flags = dict(locals())
    cfg = _predict_config(**{k: flags[k] for k in _INFER_FLAGS})
    performance_setup()
    metrics = evaluate_model(
        first, second, out, split, cfg, cfg.device, progress, rand_error=rand_error
    )
    _print_metrics(metrics, out)


@app.command("compare")
def compare_cmd(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks (NAME.png)."),
    gt_dir: Path = typer.Argument(..., help="Folder of true masks (NAME.png), or a dataset."),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classes (default: from data)."),
    classes: str = typer.Option(None, "--classes", help="Class names a,b,c (index order)."),
    ignore_index: int = typer.Option(255, "--ignore-index", help="True-mask value not scored."),
    rand_error: bool = _RAND_ERROR,
) -> None:
    """Score predicted masks against true masks (no model): metrics + report."""
    from .infer.evaluate import evaluate_dirs

    names = [c.strip() for c in classes.split(",")] if classes else None
    metrics = evaluate_dirs(
        pred_dir, gt_dir, out, num_classes, names, ignore_index, rand_error=rand_error
    )
    _print_metrics(metrics, out)


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="A unetkit checkpoint (.pt)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript | bioimageio"),
    out: Path = typer.Option(..., "-o", "--out", help="The exported file (bioimageio: a .zip)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Parity check; bioimageio: bioimageio.core's test."
    ),
    sample: Path = typer.Option(
        None, "--sample", help="bioimageio: image for the test tensors and cover (else synthetic)."
    ),
    author: list[str] = typer.Option(
        None, "--author", help="bioimageio: an author's name (repeat for several)."
    ),
    license_id: str = typer.Option("CC-BY-4.0", "--license", help="bioimageio: SPDX licence."),
    name: str = typer.Option(None, "--name", help="bioimageio: the model's name."),
    input_dtype: str = typer.Option(
        "uint8", "--input-dtype", help="bioimageio: the images' type, uint8 | uint16."
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="onnx: int8 weights and activations (NNCF; runs with OpenVINO), calibrated on "
        "the model's training images, refused if it loses accuracy (--max-loss).",
    ),
    calibrate: Path = typer.Option(
        None,
        "--calibrate",
        help="--int8: a dataset folder (images + masks) to calibrate and gate on, instead of "
        "the one the model records; its recorded split is used where the folder holds it.",
        show_default="the model's training data",
    ),
    max_loss: float = typer.Option(
        0.5,
        "--max-loss",
        help="--int8: points of mean IoU / Dice (and AP@0.5 for instance models) int8 may "
        "lose against full precision on the validation images.",
    ),
    keep_float: str = typer.Option(
        "none",
        "--keep-float",
        help="--int8: convolutions left in float: none | first | last | ends.",
    ),  # fmt: skip
) -> None:
    """Export to ONNX / TorchScript with the model's metadata, then check parity; or to a
    BioImage.IO model package, then test it with bioimageio.core. With --int8: an int8 ONNX
    file, checked against full precision on the model's validation images."""
    if fmt == "bioimageio":
        from .bioimageio import export_bioimageio

        package = export_bioimageio(
            model, out, name=name, authors=author or None, license=license_id,
            sample=sample, input_dtype=input_dtype, opset=opset, check=check,
        )  # fmt: skip
        for weights, status in package["test"].items():
            typer.echo(f"bioimageio test {weights}: {status}")
        typer.echo(f"exported bioimageio: {out}")
        return
    from .export import export_model

    if int8:
        from .quantize import export_int8, gate_line

        if fmt != "onnx":
            raise UnetkitError(f"--int8 exports ONNX only (--format onnx); got {fmt!r}")
        record = export_int8(
            model, out, calibrate, max_loss=max_loss, opset=opset, keep_float=keep_float
        )["int8"]
        typer.echo(f"int8 accuracy: {gate_line(record['gate'], max_loss)}")
        typer.echo(f"exported onnx int8: {out}")
        return
    if calibrate is not None:
        raise UnetkitError("--calibrate needs --int8")
    result = export_model(model, fmt, out, opset=opset, check=check)
    for row in result["parity"]:
        h, w = row["size"]
        typer.echo(
            f"parity {h}x{w}: max |logit diff| {row['max_abs_diff']:.2e}, "
            f"argmax agreement {100 * row['agreement']:.4f} %"
        )
    typer.echo(f"exported {fmt}: {out}")


@app.command("add-label")
def add_label_cmd(
    mask: Path = typer.Argument(
        ..., help="A slide's mask from unetkit predict: NAME.ome.zarr (--zarr) or NAME.tif."
    ),
    slide: Path = typer.Argument(
        ..., help="The slide's own OME-Zarr image (NGFF 0.4 / Zarr v2 or 0.5 / Zarr v3)."
    ),
    name: str = typer.Option(
        None, "--name", help="The label image's name (default: the mask's NAME)."
    ),
) -> None:
    """Put a predicted mask into the slide's OME-Zarr as labels/NAME (napari, QuPath, MoBIE)."""
    from .infer.zarr_out import add_label

    target = add_label(mask, slide, name)
    typer.echo(f"label {target.name} written: {target}")


# ---------------------------------------------------------------------------------------------
# demo goes below this line
# ---------------------------------------------------------------------------------------------


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo"), "-o", "--out", help="Folder for everything it makes."),
    time_budget: float = typer.Option(
        1.5, "--time-budget", help="Training minutes at most (the unit of train's flag)."
    ),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs (10 steps each) at most."),
    images: int = typer.Option(24, "--images", help="Synthetic images to make."),
    large: str = typer.Option("1200x1600", "--large", help="HxW of the large tiled image."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty folder."),
) -> None:
    """Make a synthetic labelme dataset, train, evaluate, predict, and write report.html."""
    from .demo import run_demo, summary_text

    h, w = _size_option(large, "--large")
    performance_setup()
    result = run_demo(
        out,
        n_images=images,
        budget_s=60 * time_budget,
        large=(h, w),
        epochs=epochs,
        seed=seed,
        overwrite=overwrite,
    )
    typer.echo(summary_text(result))


def _is_usage_error(exc: Exception) -> bool:
    """A usage error of click (or of typer's vendored copy): bad flag, value or argument."""
    return callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code")


def _error_line(exc: Exception) -> tuple[int, str]:
    """(exit code, the one line to print) for an exception that ended a command.

    The user's input (``UnetkitError``), files and folders (``OSError``: missing, exists,
    permission, disk full) and usage errors exit with 2 and say what is wrong; anything else
    is a bug in unetkit: exit 1, saying so.
    """
    if isinstance(exc, UnetkitError):
        return 2, f"error: {exc}"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return 2, f"error: {exc.filename}: {exc.strerror}"
        return 2, f"error: {exc}"
    if _is_usage_error(exc):
        # a click exception (of click or of typer's vendored copy), checked by duck typing
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        if not message:  # no arguments at all: the help was shown
            return int(exc.exit_code), ""  # type: ignore[attr-defined]
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return int(exc.exit_code), f"error: {message}{hint}"  # type: ignore[attr-defined]
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return 1, (
        f"internal error: {type(exc).__name__}: {first} "
        "(run with --debug for a traceback; please report)"
    )


# what decides an option's value when it is not given (``--help`` shows it as the default)
_UNSET_DEFAULTS = {
    "--preset": "auto",
    "--resume": "a new run",
    "--base-width": "the preset's; auto: 16 on a CPU, 32 on a GPU",
    "--depth": "the preset's",
    "--loss": "auto",
    "--weight-map-objects": "foreground",
    "--val-stems": "--val-fraction of the images; under 40 images a band of each",
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
    "--out-channels": "the preset's",
}


def _command():
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
                param.show_default = _UNSET_DEFAULTS.get(param.opts[0], "none")

        def help_option(ctx, _make=sub.get_help_option):  # --help is made per context
            option = _make(ctx)
            if option is not None:
                option.metavar = ""
            return option

        sub.get_help_option = help_option
    return command


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0, 2 for the user's errors (one line), 1 for unetkit's bugs.

    ``--debug`` (anywhere before a ``--``) re-raises errors so that Python shows the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    args = [a for i, a in enumerate(args) if i >= end or a != "--debug"]
    try:
        # click returns (not raises) typer.Exit's code when standalone_mode is off
        result = _command().main(args=args, prog_name="unetkit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click's answer to Ctrl-C / EOF at a prompt
            return 1
        if debug and not _is_usage_error(exc):
            raise
        code, line = _error_line(exc)
        if line:
            typer.echo(line, err=True)
        return code
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
