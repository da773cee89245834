"""The flags several commands take, and the parsers of flag values.

The inference flags are declared once here: ``predict`` and ``evaluate`` take the same ones,
and each is named after the ``PredictConfig`` field it sets (``--fg-threshold`` ->
``fg_threshold``), which ``predict_config`` relies on. A bad value is one ``UnetkitError``
line naming its flag, before any model or image is read. So are ``predict``'s output flags,
each named after the ``predict_paths`` argument it sets, which gets them as they are.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from ..config import PredictConfig, parse_size
from ..errors import UnetkitError
from .help import config_option


def parse_roi(text: str | None) -> tuple[float, ...] | None:
    """``--crop-roi`` THRESHOLD,MIN_AREA,MAX_AREA[,MARGIN] -> numbers; None: not given."""
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


def parse_comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ("a", "b"); None stays None (not given)."""
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def parse_class_weights(text: str | None) -> tuple[float, ...] | str | None:
    """``--class-weights``: 'balanced' or numbers w0,w1,...; None stays None (not given)."""
    if text is None or text == "balanced":
        return text
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UnetkitError(f"--class-weights: 'balanced' or numbers, got {text!r}") from None


def parse_size_flag(text: str, flag: str) -> tuple[int, int]:
    """A size flag's N or HxW -> (H, W); a bad value is one line naming ``flag``."""
    try:
        return parse_size(text, flag)
    except ValueError as exc:
        raise UnetkitError(str(exc)) from None


STRATEGY_HELP = "auto | full | letterbox | resize | tile"

# The inference flags, declared once: predict and evaluate take the same ones.
STRATEGY = config_option(PredictConfig, "strategy", "--strategy", help=STRATEGY_HELP)
TILE = typer.Option(None, "--tile", help="Tile size N or HxW.")
OVERLAP = config_option(PredictConfig, "overlap", "--overlap", help="Tile overlap in [0, 1).")
BLEND = config_option(PredictConfig, "blend", "--blend", help="gaussian | constant")
BATCH = config_option(PredictConfig, "batch_size", "--batch-size", help="Tiles per forward pass.")
TTA = config_option(PredictConfig, "tta", "--tta/--no-tta", help="Flip test-time augmentation.")
THRESHOLD = config_option(
    PredictConfig, "threshold", "--threshold", help="Binary models: foreground cut."
)
DEVICE = config_option(PredictConfig, "device", "--device", help="auto | cpu | cuda | cuda:N")
PRECISION = config_option(
    PredictConfig, "precision", "--precision", help="auto | fp32 | bf16 | fp16"
)
FG_THRESHOLD = typer.Option(
    None, "--fg-threshold", help="Instance models: object pixels where 1 - p(bg) > T."
)
SEED_THRESHOLD = typer.Option(
    None,
    "--seed-threshold",
    help="Watershed seeds: instance models where p(interior) > T (the distance head seeds at "
    "the h-maxima of its smoothed distance instead); --objects-between where 1 - p(class) > T.",
)
MIN_SIZE = typer.Option(
    None, "--min-size", help="Instance models: drop smaller objects (--objects-between: seeds)."
)
MIN_SCORE = typer.Option(
    None,
    "--min-score",
    help="Instance models: drop objects whose mean 1 - p(bg) is under S.",
)
FILL_HOLES = typer.Option(
    None,
    "--fill-holes/--no-fill-holes",
    help="Instance models: fill holes in objects.",
    show_default="the model's",
)
PROB_THRESH = typer.Option(
    None,
    "--prob-thresh",
    help="Rays-head instance models: pixels whose object probability exceeds P propose "
    "their polygons.",
)
NMS_THRESH = typer.Option(
    None,
    "--nms-thresh",
    help="Rays-head instance models: drop a polygon covering more than this share of a "
    "better one (or of itself).",
)
SPLIT_THRESHOLD = typer.Option(
    None,
    "--split-threshold",
    help="Offsets-head instance models: no seed where the predicted offsets converge faster "
    "than this per pixel (lower splits more).",
)
OBJECTS_BETWEEN = typer.Option(
    None,
    "--objects-between",
    help="Semantic models: objects are the regions this class (name or index) separates, "
    "e.g. cells between membranes (seeded watershed; --seed-threshold default 0.9, "
    "--min-size 10).",
)

# evaluate and compare
RAND_ERROR = typer.Option(
    False,
    "--rand-error/--no-rand-error",
    help="Also the ISBI 2012 adapted Rand error (2-class membrane tasks, membrane = class 1; "
    "with --objects-between: of the regions against the true ones).",
)


MIN_AREA = config_option(
    PredictConfig, "min_area", "--min-area", help="Skip contours under N pixels."
)

_PREDICT_ONLY: dict[str, tuple[type, Any]] = {"min_area": (int, MIN_AREA)}

# predict's output flags, each named after the ``predict_paths`` argument it sets
GEOJSON = typer.Option(False, "--geojson", help="Objects: NAME.geojson (QuPath).")
COCO = typer.Option(False, "--coco", help="Objects: coco.json for the folder.")
COCO_FORMAT = typer.Option(
    "rle",
    "--coco-format",
    help="coco.json segmentations: rle (exact, holes kept) or polygon (pixel-edge "
    "outlines; an object's holes are filled).",
)
SAVE_PROBS = typer.Option(False, "--save-probs", help="Write NAME_probs.npy (fp16).")
LABELME = typer.Option(
    False, "--labelme", help="Write NAME.json labelme polygons (one per object with objects)."
)
LEGEND = typer.Option(
    False, "--legend", help="Overlays: a legend strip of the classes present (wider PNG)."
)
LEVEL = typer.Option(
    None, "--level", help="TIFF inputs: predict this pyramid level (0 = full size), read by region."
)
BACKGROUND = typer.Option(
    None,
    "--skip-background",
    help="Images read by region: bright | dark: skip tiles of background only, brighter "
    "(or darker) than an Otsu threshold of the preview; they are class 0.",
)
ZARR = typer.Option(
    False,
    "--zarr",
    help="Images read by region: write the mask as NAME.ome.zarr (OME-NGFF 0.4 multiscale "
    "label image) instead of NAME.tif; images read whole are not affected.",
)

# predict takes these, in this order, and hands them to ``predict_paths`` as they are
_OUTPUTS: dict[str, tuple[type, Any]] = {
    "geojson": (bool, GEOJSON),
    "coco": (bool, COCO),
    "coco_format": (str, COCO_FORMAT),
    "save_probs": (bool, SAVE_PROBS),
    "labelme": (bool, LABELME),
    "legend": (bool, LEGEND),
    "level": (int, LEVEL),
    "background": (str, BACKGROUND),
    "zarr": (bool, ZARR),
}

# predict and evaluate take these, in this order, and hand them to ``predict_config``
_INFERENCE: dict[str, tuple[type, Any]] = {
    "strategy": (str, STRATEGY),
    "tile": (str, TILE),
    "overlap": (float, OVERLAP),
    "blend": (str, BLEND),
    "batch_size": (int, BATCH),
    "tta": (bool, TTA),
    "threshold": (float, THRESHOLD),
    "device": (str, DEVICE),
    "precision": (str, PRECISION),
    "fg_threshold": (float, FG_THRESHOLD),
    "seed_threshold": (float, SEED_THRESHOLD),
    "min_size": (int, MIN_SIZE),
    "min_score": (float, MIN_SCORE),
    "fill_holes": (bool, FILL_HOLES),
    "prob_thresh": (float, PROB_THRESH),
    "nms_thresh": (float, NMS_THRESH),
    "split_threshold": (float, SPLIT_THRESHOLD),
    "objects_between": (str, OBJECTS_BETWEEN),
}


def with_flags(
    placeholder: str, flags: dict[str, tuple[type, Any]], build: Callable[[dict[str, Any]], Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command's parameter ``placeholder`` becomes the options ``flags`` (parameter name ->
    (type, typer option)) in its signature and ``--help``, in its place; the command gets
    ``build`` of their values (None: not given) as ``placeholder``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        added = [inspect.Parameter(n, kind, default=o, annotation=t) for n, (t, o) in flags.items()]
        params = [
            new
            for old in signature.parameters.values()
            for new in (added if old.name == placeholder else [old])
        ]

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            values = {name: given.pop(name) for name in flags}
            return command(**given, **{placeholder: build(values)})

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


FROM_FLAGS: Any = None  # the default of a ``with_flags`` placeholder: the flags replace it


def inference_flags(*extra: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command's parameter ``cfg: PredictConfig`` becomes the inference flags (plus the
    ``extra`` ones of ``_PREDICT_ONLY``); the command gets the config they build, checked
    before it runs (``predict_config``)."""
    table = {**_INFERENCE, **{name: _PREDICT_ONLY[name] for name in extra}}
    return with_flags("cfg", table, lambda values: predict_config(**values))


def output_flags() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command's parameter ``outputs`` becomes predict's output flags; the command gets
    their values as ``predict_paths`` keyword arguments (a dict)."""
    return with_flags("outputs", _OUTPUTS, dict)


def predict_config(**flags: Any) -> PredictConfig:
    """A PredictConfig from CLI flags (``tile`` as 'N' or 'HxW'); None flags keep defaults.

    Checked before any model or image is read: a bad value is one line naming its flag.
    """
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
