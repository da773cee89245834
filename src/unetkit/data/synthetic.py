"""Realistic toy data: stained-tissue-like images of touching, overlapping cells with nuclei.

The annotation comes first (labelme shapes with coordinates rounded as written to JSON), the
class mask is rasterised from exactly those shapes, and the image is rendered from the mask:
textured, unevenly lit, blurred and noisy. Classes differ in colour, brightness and texture
(so a small U-Net learns them in a minute on a CPU), but lighting, stain variation and noise
make a single global threshold fail.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from PIL import Image

from ..files import atomic_dir
from .labelme import Shape
from .rasterize import rasterize

log = logging.getLogger(__name__)

# Per-class base colour (RGB in [0, 1]) and texture (blur sigma px, amplitude); index 0 is the
# background, then classes in order; extra classes reuse the last entries with a hue shift.
_LOOK = [
    ((0.86, 0.82, 0.85), 6.0, 0.05),  # background: pale, smooth mottling
    ((0.84, 0.52, 0.66), 1.5, 0.07),  # cell cytoplasm: pink, fine texture
    ((0.36, 0.24, 0.56), 0.8, 0.10),  # nucleus: dark purple, grainy
    ((0.55, 0.70, 0.35), 1.0, 0.08),  # extra class: olive
]


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    """(n, 2) polygon of a wobbly ellipse (low harmonics), vertices counter-clockwise."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k, amp in ((2, 0.10), (3, 0.06), (5, 0.03)):
        radius += rng.uniform(0, amp) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch, angle = rng.uniform(0.8, 1.0), rng.uniform(0, np.pi)
    x, y = r * radius * np.cos(theta), r * radius * np.sin(theta) * stretch
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _place(rng: np.random.Generator, size: tuple[int, int], radius: tuple[float, float]):
    """Cell centres and radii: dense, touching and slightly overlapping, not piled up."""
    h, w = size
    mean_r = sum(radius) / 2
    target = max(1, int(0.6 * h * w / (math.pi * mean_r**2)))
    centres, radii = np.zeros((0, 2)), np.zeros(0)
    for _ in range(target * 15):
        if len(radii) >= target:
            break
        r = rng.uniform(*radius)
        c = rng.uniform([-0.3 * r, -0.3 * r], [w + 0.3 * r, h + 0.3 * r])
        dist = np.hypot(*(centres - c).T) if len(radii) else np.zeros(0)
        if (dist > 0.78 * (radii + r)).all():  # overlaps of up to ~20 % of a radius
            centres, radii = np.vstack([centres, c]), np.append(radii, r)
    return centres, radii


def make_shapes(
    size: tuple[int, int],
    rng: np.random.Generator,
    classes: Sequence[str] = ("cell", "nucleus"),
    radius: tuple[float, float] = (12.0, 22.0),
) -> list[Shape]:
    """Labelme shapes of one image: cell polygons, nuclei (polygons and circles), extras.

    Coordinates are rounded to 2 decimals, as written to JSON.

    Args:
        size: (height, width).
        rng: random generator.
        classes: class names; ``classes[0]`` cells, ``classes[1]`` nuclei, further classes small
            round particles (circle shapes) between the cells.
        radius: range of cell radii in pixels.
    """
    shapes: list[Shape] = []
    centres, radii = _place(rng, size, radius)

    def add(label: str, kind: str, pts: np.ndarray) -> None:
        shapes.append(Shape(label, kind, np.round(pts, 2), index=len(shapes)))

    for (cx, cy), r in zip(centres, radii):
        add(classes[0], "polygon", _blob(rng, cx, cy, r, int(rng.integers(18, 30))))
        if len(classes) < 2:
            continue
        nr = r * rng.uniform(0.35, 0.5)
        nx, ny = cx + rng.uniform(-0.2, 0.2) * r, cy + rng.uniform(-0.2, 0.2) * r
        if rng.random() < 0.3:
            add(classes[1], "circle", np.array([[nx, ny], [nx + nr, ny]]))
        else:
            add(classes[1], "polygon", _blob(rng, nx, ny, nr, 14))
    h, w = size
    for extra in classes[2:]:
        for _ in range(max(1, int(h * w / 12000))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 6)
            add(extra, "circle", np.array([[x, y], [x + r, y]]))
    return shapes


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], sigma: float) -> np.ndarray:
    """(H, W) float32 Gaussian-blurred noise scaled to unit std.

    Wide blurs are done on a coarser grid and enlarged (same look, a fraction of the cost).
    """
    h, w = size
    step = max(1, int(sigma // 2))
    small = (max(2, -(-h // step)), max(2, -(-w // step)))
    field: np.ndarray = rng.standard_normal(small).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma / step)
    if step > 1:
        field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def render(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render an RGB image for a class-index mask (0 background).

    Args:
        mask: (H, W) int class indices.
        rng: random generator (stain, lighting, texture and noise).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    h, w = mask.shape
    image = np.zeros((h, w, 3), np.float32)
    stain = rng.uniform(-0.04, 0.04, size=3).astype(np.float32)  # per-image colour shift
    for cls in range(int(mask.max()) + 1):
        colour, sigma, amp = _LOOK[min(cls, len(_LOOK) - 1)]
        where = mask == cls
        if not where.any():
            continue
        texture = _smooth_noise(rng, (h, w), sigma)[where] * amp
        image[where] = np.asarray(colour, np.float32) + stain + texture[:, None]
    # darker rim along object borders (membranes), then lighting, optics and sensor noise
    edges = cv2.morphologyEx((mask > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    image[edges > 0] *= 0.85
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tilt = rng.uniform(-0.12, 0.12, size=2)
    light = 1 + tilt[0] * (xx / w - 0.5) + tilt[1] * (yy / h - 0.5)
    light += 0.06 * _smooth_noise(rng, (h, w), max(h, w) / 6)
    image = cv2.GaussianBlur(image * light[:, :, None], (0, 0), 0.9)
    image += rng.normal(0, 0.025, image.shape).astype(np.float32)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def make_image_and_mask(
    size: tuple[int, int] = (192, 192), seed: int = 0, classes: Sequence[str] = ("cell", "nucleus")
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its class mask (for large test images too, e.g. 1500x2000).

    Args:
        size: (height, width).
        seed: random seed (same seed -> identical output).
        classes: class names; mask value i + 1 is ``classes[i]``.

    Returns:
        (image (H, W, 3) uint8 RGB, mask (H, W) int64 with 0 = background).
    """
    rng = np.random.default_rng(seed)
    size = cast("tuple[int, int]", tuple(size))  # a list is accepted too
    shapes = make_shapes(size, rng, classes)
    values = {name: i + 1 for i, name in enumerate(classes)}
    mask = rasterize(shapes, size, values).astype(np.int64)
    return render(mask, rng), mask


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _labelme_json(shapes: list[Shape], name: str, size, image_data: bytes | None) -> str:
    doc: dict[str, Any] = {
        "version": "5.5.0",
        "flags": {},
        "shapes": [
            {
                "label": s.label,
                "points": s.points.tolist(),
                "group_id": None,
                "description": "",
                "shape_type": s.shape_type,
                "flags": {},
                "mask": None,
            }
            for s in shapes
        ],
        "imagePath": name,
        "imageData": base64.b64encode(image_data).decode("ascii") if image_data else None,
        "imageHeight": int(size[0]),
        "imageWidth": int(size[1]),
    }
    return json.dumps(doc, indent=2)


def make_labelme_folder(
    out_dir: str | os.PathLike,
    n_images: int = 8,
    size: tuple[int, int] = (192, 192),
    seed: int = 0,
    classes: Sequence[str] = ("cell", "nucleus"),
    image_data_every: int = 3,
) -> Path:
    """Write a labelme-annotated toy data set: ``img_000.json`` + ``img_000.png``, ...

    Every ``image_data_every``-th JSON (starting with the first) embeds its image as base64
    ``imageData`` and has no PNG beside it; the others reference ``imagePath``. A labelme
    ``labels.txt`` (``__ignore__``, ``_background_``, then the classes) is written too.

    Args:
        out_dir: a new (or empty) folder.
        n_images: number of images.
        size: (height, width) of every image.
        seed: base seed; image i uses ``seed * 100003 + i``.
        classes: class names (see :func:`make_shapes`).
        image_data_every: 0 never embeds images.

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    if out.exists() and not any(out.iterdir()):
        out.rmdir()  # an empty folder is fine; atomic_dir refuses non-empty ones
    with atomic_dir(out) as tmp:
        for i in range(n_images):
            rng = np.random.default_rng(seed * 100003 + i)
            shapes = make_shapes(cast("tuple[int, int]", tuple(size)), rng, classes)
            values = {name: k + 1 for k, name in enumerate(classes)}
            mask = rasterize(shapes, cast("tuple[int, int]", tuple(size)), values)
            png = _png_bytes(render(mask, rng))
            name = f"img_{i:03d}"
            embed = image_data_every > 0 and i % image_data_every == 0
            if not embed:
                (tmp / f"{name}.png").write_bytes(png)
            text = _labelme_json(shapes, f"{name}.png", size, png if embed else None)
            (tmp / f"{name}.json").write_text(text, encoding="utf-8")
        labels = ["__ignore__", "_background_", *classes]
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    log.info("wrote %d labelme images to %s", n_images, out)
    return out
