"""TIFF stacks: peak memory of ``unetkit predict`` on a stack larger than a few hundred MB, and
its speed against the same planes saved as separate PNG files (same run, same model).

Generates a time-lapse of ``--planes`` 16-bit grey planes of ``--size`` x ``--size`` pixels (a
smooth moving pattern with noise) as an ImageJ hyperstack (``TYX``), written page by page so
that the bench never holds it either, and the same planes as 16-bit PNGs in a folder. Each
prediction runs ``unetkit predict`` in a subprocess of its own, which reports its peak resident
set size (``VmHWM`` of ``/proc/self/status``: the process's own high-water mark; ``ru_maxrss``
would carry the parent's over fork and exec) and its wall time. A third subprocess predicts one
plane in memory (``Predictor.predict_mask``) with the same model: the floor (interpreter, torch,
model, one plane and its tiles).

    python bench/stack.py                         # 48 planes of 2048 x 2048 uint16: 384 MiB
    python bench/stack.py --planes 16 --size 1024 # quick

Measured (2 shared CPU cores, ``PYTHONPATH=src nice -n 10 python bench/stack.py``): a
384 MiB stack (48 x 2048 x 2048 uint16): peak RSS 457 MiB plane by plane against 368 MiB for
one plane predicted in memory (the stack itself would be 384 MiB more, before any prediction),
70.8 s (2.84 Mpx/s) against 102.5 s (1.96 Mpx/s) for the 48 planes as 16-bit PNGs (which
also get a colour PNG and an overlay PNG each; peak 637 MiB); masks identical plane for plane.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
mode, model, source, out = sys.argv[1:5]
if mode == "cli":
    from unetkit.cli import main
    code = main(["predict", model, source, "-o", out, "--no-progress", "--device", "cpu"])
    assert code == 0, code
else:
    import tifffile
    from unetkit import PredictConfig
    from unetkit.infer import Predictor
    predictor = Predictor.from_checkpoint(model, PredictConfig(), device="cpu")
    with tifffile.TiffFile(source) as tif:
        plane = tif.pages[0].asarray()[:, :, None]
    predictor.predict_mask(plane)
wall = time.perf_counter() - t0
status = open("/proc/self/status").read()
hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
print(json.dumps({"wall_s": wall, "peak_rss_mib": hwm / 1024}))
"""


def _plane(i: int, size: int):
    import numpy as np

    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    wave = np.sin(12 * (xx + 0.02 * i)) * np.cos(9 * (yy - 0.015 * i))
    image = 32768 + 20000 * wave + rng.normal(0, 1500, (size, size))
    return np.clip(image, 0, 65535).astype(np.uint16)


def _model(folder: Path) -> Path:
    import torch

    from unetkit import DataConfig, build_model, make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("milesial", base_width=4, depth=3, in_channels=1, out_channels=3)
    pre = DataConfig(channels=1, resize="random-crop", size=(256, 256), normalize="image")
    palette = [[0, 0, 0], [0, 200, 0], [200, 0, 0]]
    ckpt = make_checkpoint(
        model.eval(), classes=["bg", "a", "b"], palette=palette, preprocessing=pre
    )
    return save_checkpoint(ckpt, folder / "model.pt")


def _run(mode: str, model: Path, source: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(model), str(source), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=48)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--folder", type=Path, default=None, help="default: a temporary one")
    args = parser.parse_args()
    import numpy as np
    import tifffile
    from PIL import Image

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        model = _model(folder)
        stack = folder / "movie.tif"
        planes = (_plane(i, args.size) for i in range(args.planes))
        with tifffile.TiffWriter(stack, imagej=True) as writer:
            writer.write(planes, shape=(args.planes, args.size, args.size), dtype=np.uint16,
                         metadata={"axes": "TYX"})  # fmt: skip
        pngs = folder / "pngs"
        pngs.mkdir()
        for i in range(args.planes):
            Image.fromarray(_plane(i, args.size)).save(pngs / f"t{i:04d}.png")
        size_mib = stack.stat().st_size / 2**20
        png_mib = sum(p.stat().st_size for p in pngs.iterdir()) / 2**20
        floor = _run("one", model, stack, folder / "none")
        as_stack = _run("cli", model, stack, folder / "out_stack")
        as_pngs = _run("cli", model, pngs, folder / "out_pngs")
        with tifffile.TiffFile(folder / "out_stack" / "movie.tif") as tif:
            masks = tif.series[0]
            singles = folder / "out_pngs"
            same = all(
                (masks.asarray(key=i) == np.asarray(Image.open(singles / f"t{i:04d}.png"))).all()
                for i in range(args.planes)
            )
        mpx = args.planes * args.size**2 / 1e6
        print(f"stack: {args.planes} planes of {args.size}x{args.size} uint16, "
              f"{size_mib:.0f} MiB on disk (PNGs: {png_mib:.0f} MiB)")  # fmt: skip
        print(f"one plane in memory (floor):   peak RSS {floor['peak_rss_mib']:7.0f} MiB")
        for name, run in (("stack (plane by plane)", as_stack), ("separate PNGs", as_pngs)):
            print(f"{name:<30} peak RSS {run['peak_rss_mib']:7.0f} MiB, "
                  f"{run['wall_s']:6.1f} s, {mpx / run['wall_s']:.2f} Mpx/s")  # fmt: skip
        print(f"masks identical, plane for plane: {same}")


if __name__ == "__main__":
    main()
