"""``unetkit demo``: the whole system on data it makes itself, in a few minutes on a CPU.

synthetic labelme folder -> prepare -> verify -> train -> evaluate (held-out) -> predict
(held-out + one large tiled image) -> report.html with metrics, curves, panels, overlays, and
the cells counted as objects (connected components of each class, scored against the shapes
``prepare`` wrote to ``instances/``, with an object table and an object overlay).
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import AugmentConfig, DataConfig, PredictConfig, TrainConfig
from .errors import UnetkitError
from .files import write_text
from .models.presets import preset_config


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured."""

    out_dir: Path
    metrics: dict
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    objects: dict[str, int] = field(default_factory=dict)  # predicted objects per image file


def demo_config(
    dataset: Path, run_dir: Path, budget_s: float, seed: int, epochs: int = 12
) -> TrainConfig:
    """The demo's training recipe: a narrow milesial U-Net on 128 px crops, bf16 where fast."""
    return TrainConfig(
        dataset=str(dataset),
        run_dir=str(run_dir),
        preset="milesial",
        model=preset_config("milesial", base_width=16, depth=3),
        data=DataConfig(channels=3, resize="random-crop", size=(128, 128)),
        augment=AugmentConfig(affine=0.3, elastic=0.3, rotate_deg=10.0),
        loss="ce+dice",
        optimizer="adamw",
        lr=3e-3,
        schedule="cosine",
        warmup_epochs=1,
        epochs=epochs,
        batch_size=8,
        steps_per_epoch=10,
        val_every=4,
        time_budget=budget_s / 60,
        seed=seed,
        panels=3,
    )


def run_demo(
    out_dir: str | Path,
    *,
    n_images: int = 24,
    size: int = 160,
    budget_s: float = 90,
    large: tuple[int, int] = (1200, 1600),
    epochs: int = 12,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``out_dir``; returns its metrics and timings.

    Raises:
        UnetkitError: ``out_dir`` exists and is not empty (unless ``overwrite``), or a stage
            found a problem (e.g. ``verify`` reporting errors).
    """
    from .data.prepare import prepare
    from .data.synthetic import make_image_and_mask, make_labelme_folder
    from .data.verify import verify
    from .data.writers import write_image
    from .infer.evaluate import evaluate_model
    from .infer.outputs import predict_paths
    from .infer.predict import Predictor
    from .train.fit import fit

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UnetkitError(f"{out}: demo folder is not empty (use --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        times[name] = now - clock
        clock = now

    labelme = make_labelme_folder(out / "labelme", n_images=n_images, size=(size, size), seed=seed)
    lap("synthesise")
    report = prepare(labelme, out / "dataset", val_fraction=0.25, seed=seed, overwrite=overwrite)
    lap("prepare")
    errors = [f for f in verify(out / "dataset") if f.level == "error"]
    if errors:
        raise UnetkitError(
            f"{out / 'dataset'}: verify found {len(errors)} problem(s): {errors[0].message}"
        )
    lap("verify")
    run = fit(
        demo_config(out / "dataset", out / "run", budget_s, seed, epochs), overwrite=overwrite
    )
    lap("train")
    metrics = evaluate_model(
        run / "best.pt", out / "dataset", out / "evaluation", split="val", progress=progress
    )
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    lap("evaluate")
    image, _ = make_image_and_mask(large, seed=seed + 1000, classes=report.classes[1:])
    write_image(out / "large" / "large.png", image)
    predictor = Predictor.from_checkpoint(run / "best.pt", PredictConfig(strategy="auto"))
    val_images = [out / "dataset" / "images" / f"{s}.png" for s in report.split["val"]]
    predicted = predict_paths(
        predictor,
        [*val_images, out / "large" / "large.png"],
        out / "predictions",
        progress=progress,
        objects=True,
    )
    if predicted.failed:
        raise UnetkitError(f"demo prediction failed: {predicted.failed[0][1]}")
    lap("predict")
    counts = {row["image"]: row["objects"] for row in predicted.rows}
    page = write_report(out, metrics, times, report.split["val"], counts)
    return DemoResult(out, metrics, times, page, counts)


def _img(src: str, caption: str, width: int = 0, pixels: bool = False) -> str:
    """A captioned image; ``pixels``: an image of masks or overlays, scaled up with its pixels
    kept sharp (a 96 px overlay shown 360 px wide is not blurred into the next class)."""
    w = f' width="{width}"' if width else ""
    c = ' class="px"' if pixels else ""
    return (
        f'<figure><img src="{html.escape(src)}"{w}{c}><figcaption>{html.escape(caption)}'
        f"</figcaption></figure>"
    )


def _objects_section(out: Path, metrics: dict, counts: dict[str, int], stem: str) -> str:
    """Object counts, object metrics, and one image's object overlay and table."""
    import csv

    obj = metrics.get("objects") or {}
    scores = "".join(
        f"<li>{label}: <b>{_num(obj.get(key))}</b></li>"
        for key, label in (
            ("ap_50", "AP at IoU 0.5"),
            ("map", "mean AP over IoU 0.5:0.95 (DSB 2018)"),
            ("pq", "panoptic quality"),
            ("count_error", "mean absolute count error per image"),
        )
    )
    totals = f"{obj.get('n_pred', '-')} predicted, {obj.get('n_true', '-')} true"
    listed = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{n}</td></tr>" for name, n in counts.items()
    )
    table = ""
    path = out / "predictions" / f"{stem}_objects.csv"
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = ["id", "class", "area_px", "perimeter_px", "centroid_y_px", "centroid_x_px"]
        keep += ["equivalent_diameter_px", "eccentricity", "solidity"]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keep)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(r.get(k, ''))}</td>" for k in keep) + "</tr>"
            for r in rows[:12]
        )
        table = (
            f"<p>{html.escape(path.name)}: {len(rows)} objects (first 12 rows; the CSV also has "
            f"the bounding box and the intensity per channel)</p><table><tr>{head}</tr>{body}"
            "</table>"
        )
    caption = f"{stem}: each object in its own colour, outlined"
    picture = _img(f"predictions/{stem}_objects.png", caption, 360, pixels=True)
    return f"""<h2>Objects</h2>
<p>Each class's connected components counted as objects, scored on the held-out images against
the objects <code>prepare</code> wrote to <code>instances/</code> (one per labelme shape):
{html.escape(totals)}.</p><ul>{scores}</ul>
<table><tr><th>image</th><th>objects</th></tr>{listed}</table>
{picture}
{table}
"""


def _per_image_section(out: Path) -> str:
    """Every scored image, worst first (mean IoU), with its overlay as a thumbnail."""
    import csv

    path = out / "evaluation" / "per_image.csv"
    if not path.is_file():
        return ""
    with path.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r.get("mean_iou") or 0))
    keys = [("mean_iou", "mean IoU"), ("mean_dice", "mean Dice"), ("obj_ap_50", "AP@0.5")]
    keys += [("obj_n_true", "objects (true)"), ("obj_n_pred", "objects (predicted)")]
    head = "<th>image</th>" + "".join(f"<th>{html.escape(t)}</th>" for _, t in keys)
    body = []
    for row in rows:
        stem = Path(row["image"]).stem
        thumb = f"predictions/{stem}_overlay.png"
        cell = (
            f'<a href="{thumb}"><img src="{thumb}" width="96" class="px"></a>'
            f"<br>{html.escape(row['image'])}"
            if (out / thumb).is_file()
            else html.escape(row["image"])
        )
        values = "".join(f"<td>{_cell(row.get(k), k.startswith('obj_n_'))}</td>" for k, _ in keys)
        body.append(f"<tr><td>{cell}</td>{values}</tr>")
    return (
        "<h2>Per image (worst first)</h2><table><tr>" + head + "</tr>" + "".join(body) + "</table>"
    )


def _cell(value: str | None, count: bool = False) -> str:
    """A score with 3 decimals; a count (``count``) as a whole number, 0 and 1 included."""
    if value in (None, ""):
        return "-"
    number = float(value)
    if number.is_integer() and (count or number > 1):
        return str(int(number))
    return f"{number:.3f}"


def _run_section(out: Path) -> str:
    """The run's configuration and data fingerprint (from the checkpoint), and links."""
    import json as _json

    from .checkpoint import load_checkpoint

    parts = []
    best = out / "run" / "best.pt"
    if best.is_file():
        ckpt = load_checkpoint(best)
        state = ckpt.train_state or {}
        fingerprint = ckpt.card.fingerprint
        if fingerprint:
            from .data.fingerprint import describe

            text = html.escape(describe(fingerprint, ckpt.classes))
            parts.append(f"<h2>Data fingerprint</h2><pre>{text}</pre>")
        config = state.get("config")
        if config:
            text = html.escape(_json.dumps(config, indent=1))
            summary = "<summary>Training configuration</summary>"
            parts.append(f"<details>{summary}<pre>{text}</pre></details>")
    links = [
        ("dataset/", "prepared dataset"), ("dataset/overlays/", "annotation overlays"),
        ("run/config.json", "run config"), ("run/history.csv", "training history"),
        ("run/curves.png", "curves"), ("run/best.pt", "best checkpoint"),
        ("evaluation/metrics.json", "metrics"), ("evaluation/per_image.csv", "per-image scores"),
        ("evaluation/confusion.csv", "confusion matrix"),
        ("predictions/summary.csv", "prediction summary"),
        ("predictions/", "every prediction"),
    ]  # fmt: skip
    items = "".join(
        f'<li><a href="{href}">{html.escape(label)}</a> <code>{href}</code></li>'
        for href, label in links
        if (out / href).exists()
    )
    parts.append(f"<h2>Files</h2><ul>{items}</ul>")
    return "\n".join(parts)


def write_report(
    out: Path,
    metrics: dict,
    times: dict[str, float],
    val_stems: list[str],
    counts: dict[str, int] | None = None,
) -> Path:
    """A static report.html next to the images it shows (``counts``: objects per image)."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_num(v.get(k))}</td>" for k in ("iou", "dice", "precision", "recall"))
        + "</tr>"
        for name, v in metrics.get("per_class", {}).items()
    )
    summary = "".join(
        f"<li>{k}: <b>{_num(metrics.get(k))}</b></li>"
        for k in ("mean_iou", "mean_dice", "pixel_accuracy")
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    panels = sorted((out / "run" / "panels").glob("*.png"))
    overlays = [f"predictions/{s}_overlay.png" for s in val_stems[:4]]
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>unetkit demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}}
figure{{display:inline-block;margin:6px;vertical-align:top}}img{{max-width:100%;height:auto}}
img.px{{image-rendering:pixelated}}table{{border-collapse:collapse;margin:8px 0}}
td,th{{padding:3px 10px;text-align:right;vertical-align:middle}}th{{border-bottom:1px solid #999}}
td:first-child,th:first-child{{text-align:left}}tr:nth-child(even) td{{background:#f3f3f3}}
pre{{white-space:pre-wrap}}</style></head><body>
<h1>unetkit demo</h1>
<p>Synthetic labelme data &rarr; prepare &rarr; verify &rarr; train &rarr; evaluate &rarr;
predict. Times: {html.escape(timing)}.</p>
<h2>Held-out metrics</h2><ul>{summary}</ul>
<table><tr><th>class</th><th>IoU</th><th>Dice</th><th>precision</th><th>recall</th></tr>
{rows}</table>
<h2>Training curves</h2>{_img("run/curves.png", "loss and validation metrics per epoch")}
<h2>Confusion matrix</h2>{_img("evaluation/confusion.png", "rows: truth, columns: prediction")}
<h2>Validation panels</h2>
{"".join(_img(f"run/panels/{p.name}", p.stem, pixels=True) for p in panels[-1:])}
<h2>Predictions on held-out images</h2>{"".join(_img(o, Path(o).stem, 360, True) for o in overlays)}
<h2>A large image, predicted tile by tile</h2>
{_img("predictions/large_overlay.png", "large.png with predicted regions and contours")}
{_objects_section(out, metrics, counts, val_stems[0]) if counts and val_stems else ""}
{_per_image_section(out)}
{_run_section(out)}
</body></html>
"""
    page = out / "report.html"
    write_text(page, body)
    return page


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _objects_line(result: DemoResult) -> str:
    obj = result.metrics.get("objects") or {}
    counted = sum(result.objects.values())
    return (
        f"objects: {counted} counted in {len(result.objects)} predicted images; held-out "
        f"AP@0.5 {_num(obj.get('ap_50'))}, {obj.get('n_pred', 0)} predicted vs "
        f"{obj.get('n_true', 0)} true"
    )


def summary_text(result: DemoResult) -> str:
    """The one-screen summary printed at the end of ``unetkit demo``."""
    m, out = result.metrics, result.out_dir
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    lines = [
        f"unetkit demo finished in {sum(result.seconds.values()):.0f} s ({stages})",
        f"held-out mean IoU {m.get('mean_iou', 0):.3f}, mean Dice {m.get('mean_dice', 0):.3f}, "
        f"pixel accuracy {m.get('pixel_accuracy', 0):.3f}",
        _objects_line(result),
        "",
        f"  labelme annotations   {out / 'labelme'}",
        f"  prepared dataset      {out / 'dataset'}  (images/, masks/, overlays/, dataset.json)",
        f"  training run          {out / 'run'}  (best.pt, history.csv, curves.png, panels/)",
        f"  evaluation            {out / 'evaluation'}  (metrics.json, confusion.png)",
        f"  predictions           {out / 'predictions'}  (masks, overlays, objects, summary.csv)",
        f"  report                {result.report}",
    ]
    return "\n".join(lines)
