"""Peak resident memory of the whole ``unetkit predict`` process on one RGB PNG
(``bench/predict.py --cli-rss-sizes``): the default CPU model (milesial, base width 16) and
the full-width one (base width 64), each image size in its own process, the CLI's default
outputs (mask, colour mask, overlay). ``VmHWM`` of the process (what ``/usr/bin/time -f %M``
reports), process start and checkpoint loading included."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTHS = {"default (width 16)": 16, "full width (64)": 64}
_MAIN = (
    "import sys; from unetkit.cli import main; rc = main(sys.argv[1:]); "
    "print('RSS', [float(l.split()[1]) / 1024 for l in open('/proc/self/status') "
    "if l.startswith('VmHWM:')][0]); sys.exit(rc)"
)


def _checkpoint(width: int, folder: Path) -> Path:
    import torch

    from unetkit import DataConfig, build_model, make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("milesial", base_width=width, in_channels=3, out_channels=2).eval()
    pre = DataConfig(channels=3, resize="random-crop", size=(256, 256), normalize="percentile")
    ckpt = make_checkpoint(model, classes=["bg", "fg"], palette=[[0, 0, 0], [255, 0, 0]],
                           preprocessing=pre)  # fmt: skip
    return save_checkpoint(ckpt, folder / f"w{width}.pt")


def _png(size: int, folder: Path) -> Path:
    """A smooth pattern with noise (the whole-slide bench's), written as an RGB PNG."""
    import numpy as np

    from unetkit.data.writers import write_image

    y, x = np.ogrid[0:size, 0:size]
    base = 128 + 90 * np.sin(y / 37.0) * np.cos(x / 53.0)
    noise = np.random.default_rng(0).integers(-12, 13, (size, size, 3), dtype=np.int16)
    path = folder / f"image{size}.png"
    write_image(path, np.clip(base[..., None] + noise, 0, 255).astype(np.uint8))
    return path


def run(sizes: list[int]) -> None:
    print("\npeak RSS of `unetkit predict MODEL IMAGE.png -o OUT` (whole process, VmHWM), "
          "RGB PNG, milesial depth 4, precision auto")  # fmt: skip
    print(f"{'model':20s} {'image':>11s} {'peak RSS MiB':>13s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        models = {label: _checkpoint(width, folder) for label, width in WIDTHS.items()}
        for size in sizes:
            image = _png(size, folder)
            for label, ckpt in models.items():
                cmd = [sys.executable, "-c", _MAIN, "predict", str(ckpt), str(image),
                       "-o", str(folder / "out"), "--no-progress"]  # fmt: skip
                start = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                seconds = time.perf_counter() - start
                rss = float(out.split("RSS")[-1])
                print(f"{label:20s} {size:>5d}x{size:<5d} {rss:13.0f} {seconds:8.1f}", flush=True)
            image.unlink()
