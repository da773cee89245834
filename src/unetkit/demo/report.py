"""The demo's report.html: metrics, curves, panels, overlays, objects, the learning curve and
the run's configuration, as a static page next to the pictures it shows."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from ..files import write_text
from .curve import CurvePoint


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
        f"<li>{label}: <b>{fmt_score(obj.get(key))}</b></li>"
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


def _curve_section(points: Sequence[CurvePoint], otsu: float | None) -> str:
    """The learning curve: its plot, and a row per model."""
    rows = "".join(
        f"<tr><td>{p.images}</td><td>{p.dice:.3f}</td><td>{p.ratio:.3f}</td><td>{p.steps}</td>"
        f'<td><a href="{html.escape(p.run)}/">{html.escape(p.run)}</a></td></tr>'
        for p in points
    )
    rows += (
        f"<tr><td>Otsu (no learning)</td><td>{fmt_score(otsu)}</td><td></td><td></td><td></td></tr>"
    )
    largest = max(points, key=lambda p: p.images)
    smaller = [str(p.images) for p in points if p is not largest]
    sizes = " and ".join([", ".join(smaller[:-1]), smaller[-1]] if len(smaller) > 1 else smaller)
    return f"""<h2>How many images to annotate</h2>
<p>The same recipe, for the same number of steps, trained on {sizes} of the
{largest.images} training images (nested: each set holds the one before), each prepared from
its own labelme files; every model scored on the same held-out images. A per-image Otsu
threshold, which learns nothing, is the line to beat. The demo's synthetic images are all of
one kind, so a few are enough here; images of several kinds (stains, microscopes,
magnifications) need more, and the documentation's benchmarks show the curve on real nuclei.
On your own data, annotate until it flattens.</p>
{_img("curve/learning_curve.png", "foreground Dice against annotated training images")}
<table><tr><th>training images</th><th>foreground Dice</th><th>predicted / true</th>
<th>steps</th><th>run</th></tr>{rows}</table>
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

    from ..checkpoint import load_checkpoint

    parts = []
    best = out / "run" / "best.pt"
    if best.is_file():
        ckpt = load_checkpoint(best)
        state = ckpt.train_state or {}
        fingerprint = ckpt.card.fingerprint
        if fingerprint:
            from ..data.fingerprint import describe

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
    curve: tuple[Sequence[CurvePoint], float | None] = ((), None),
) -> Path:
    """A static report.html next to the images it shows (``counts``: objects per image;
    ``curve``: the learning curve's points and Otsu's Dice, shown from two points on)."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{fmt_score(v.get(k))}</td>" for k in ("iou", "dice", "precision", "recall"))
        + "</tr>"
        for name, v in metrics.get("per_class", {}).items()
    )
    summary = "".join(
        f"<li>{k}: <b>{fmt_score(metrics.get(k))}</b></li>"
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
{_curve_section(*curve) if len(curve[0]) > 1 else ""}
{_objects_section(out, metrics, counts, val_stems[0]) if counts and val_stems else ""}
{_per_image_section(out)}
{_run_section(out)}
</body></html>
"""
    page = out / "report.html"
    write_text(page, body)
    return page


def fmt_score(value) -> str:
    """A score with 3 decimals, ``-`` for none."""
    return "-" if value is None else f"{value:.3f}"
