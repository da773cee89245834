"""Assemble an 8192 x 8192 region-read mask (NAME.tif with its SubIFD pyramid) from its strips:
time and traced peak memory. Usage: PYTHONPATH=src python bench/tiff_pyramid.py OUT_DIR
(run it with another checkout's src to compare)."""

import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import tifffile

from unetkit.infer import large, strips, tiff_out

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
H = W = 8192

slide = object.__new__(large._Slide)
info = types.SimpleNamespace(
    classes=["bg", "a", "b"], palette=[[0, 0, 0], [255, 0, 0], [0, 0, 255]]
)
slide.predictor = types.SimpleNamespace(info=info)
slide.path, slide.out_dir, slide.size, slide.preview_step = Path("big.tif"), out, (H, W), 4
slide.strips = strips.Strips(out / ".big.unetkit-part", {"bench": 1})
if not slide.strips.done():
    for i in range(H // 256):  # blobs: a mask that compresses as real ones do
        yy, xx = np.mgrid[i * 256 : (i + 1) * 256, 0:W]
        rows = (
            (np.sin(yy / 97.0) * np.cos(xx / 53.0) > 0.3).astype(np.uint8)
            + (np.sin(yy / 31.0 + xx / 41.0) > 0.8)
        ).astype(np.uint8)
        slide.strips.write(i, tiff_out.compress(rows, 256))
tracemalloc.start()
t = time.perf_counter()
slide.assemble()
dt = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1]

with tifffile.TiffFile(out / "big.tif") as tif:
    levels = [lv.shape for lv in tif.series[0].levels]
print(
    f"assemble {dt:.2f} s, traced peak {peak / 2**20:.0f} MiB, "
    f"file {(out / 'big.tif').stat().st_size / 2**20:.1f} MiB, levels {levels}"
)
