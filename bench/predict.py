"""Tiled prediction speed and peak memory on big images (CPU or CUDA).

Throughput: megapixels/s of ``Predictor.predict`` with the ``tile`` strategy on a 4096 x 4096
RGB image, against the same model on whole 512 x 512 images (``full``: no tiling overhead), in
fp32 and, where the hardware has it natively, bf16. Memory: each image size runs in its own
subprocess, which reports its own peak resident set size before and after: ``VmHWM`` of
``/proc/self/status``, the high-water mark of the process's own memory map. (Not
``ru_maxrss``: Linux carries that over fork and exec, so a child would report the peak of the
bench that started it.)

Whole-slide: ``--wsi-sizes N ...`` generates an N x N RGB tiled BigTIFF (a smooth pattern
with noise, written tile by tile so the bench never holds it either) and runs ``unetkit
predict`` on it in a subprocess (the image read by region, the mask written band by band as a
tiled BigTIFF): peak RSS of that process and microseconds per pixel, against an in-memory
``predict_mask`` of a 4096 x 4096 image by the same model in the same run.

Against a peer (``--compare``, on by default): the issue-13 table on one 2048 x 2048 image and
one network (milesial at full width, 31 M parameters, trained 15 steps on synthetic cells so
its batch statistics are real): the raw network on batches of 4 x 256^2 tiles without overlap
(the untiled ceiling), ``Predictor`` with its defaults, ``Predictor`` with the settings it had
before (tiles of the 256 px training size, overlap 0.25, 4 per batch), and MONAI's
``sliding_window_inference`` (roi 256, overlap 0.25, gaussian) with the same bf16 autocast and
channels_last, when ``monai`` is importable (install it for the bench only: ``pip install
--no-deps --target /tmp/monai monai`` and pass ``--monai /tmp/monai``); plus how many pixels
each tiling runs and how many mask pixels it shares with one whole-image forward pass.

    python bench/predict.py                      # milesial, base width 8, depth 4
    python bench/predict.py --rss-sizes 4096 10000 --rss-width 4 --rss-depth 3
    python bench/predict.py --skip-throughput --rss-sizes --wsi-sizes 16384 40000
    python bench/predict.py --int8 --no-compare --skip-throughput --rss-sizes  # int8 only
    python bench/predict.py --no-compare --skip-throughput --rss-sizes --cli-rss-sizes 2048 4096

CLI memory (``--cli-rss-sizes N ...``, ``bench/cli_rss.py``): peak RSS of the whole
``unetkit predict`` process on an N x N RGB PNG, the default and the full-width model.

int8 (``--int8``, ``bench/int8.py``): int8 against bf16 and fp32 on the default CPU model and a
2048 x 2048 image, with the accuracy of each on DSB 2018 dev test images and ISBI 2012 24-29;
it trains its models (``--int8-budget`` minutes each) unless ``--int8-dir`` already holds them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _predictor(width: int, depth: int, folder: str, **config):
    import torch

    from unetkit import (
        DataConfig,
        PredictConfig,
        Predictor,
        build_model,
        make_checkpoint,
        save_checkpoint,
    )

    torch.manual_seed(0)
    model = build_model("milesial", base_width=width, depth=depth, in_channels=3, out_channels=2)
    pre = DataConfig(channels=3, resize="random-crop", size=(512, 512), mean=(0.5,), std=(0.25,))
    ckpt = make_checkpoint(model.eval(), classes=["bg", "fg"], palette=[[0, 0, 0], [255, 0, 0]],
                           preprocessing=pre)  # fmt: skip
    path = save_checkpoint(ckpt, Path(folder) / f"w{width}d{depth}.pt")
    return Predictor.from_checkpoint(path, PredictConfig(**config))


def _image(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _rate(predictor, images: list, repeat: int = 1) -> float:
    """Megapixels per second of ``predict_mask`` over ``images`` (after one warm-up call)."""
    predictor.predict_mask(images[0][:256, :256])
    start = time.perf_counter()
    for _ in range(repeat):
        for image in images:
            predictor.predict_mask(image)
    seconds = time.perf_counter() - start
    return repeat * sum(im.shape[0] * im.shape[1] for im in images) / 1e6 / seconds


def _maxrss_mib() -> float:
    """Peak resident memory of this process's own memory map, MiB (Linux ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


def _child(size: int, width: int, depth: int) -> dict:
    """In a fresh process: peak RSS before the image exists, then after predicting it."""
    with tempfile.TemporaryDirectory() as folder:
        predictor = _predictor(width, depth, folder, strategy="tile", precision="fp32")
        predictor.predict_mask(_image(64))
        loaded = _maxrss_mib()
        image = _image(size)
        start = time.perf_counter()
        mask = predictor.predict_mask(image)
        seconds = time.perf_counter() - start
    assert mask.shape == (size, size)
    return {"loaded_mib": loaded, "peak_mib": _maxrss_mib(), "seconds": seconds}


def _write_tiled_tiff(path: Path, size: int, tile: int = 512) -> None:
    """An RGB tiled BigTIFF of size x size, generated tile by tile (never whole in memory)."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:tile, 0:tile].astype(np.float32)

    def tiles():
        for y0 in range(0, size, tile):
            for x0 in range(0, size, tile):
                base = 128 + 90 * np.sin((y + y0) / 37.0) * np.cos((x + x0) / 53.0)
                noise = rng.integers(-12, 13, (tile, tile, 3), dtype=np.int16)
                yield np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                  compression="zlib", photometric="rgb")  # fmt: skip


def _wsi(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        predictor = _predictor(args.rss_width, args.rss_depth, folder, strategy="tile")
        ckpt = Path(folder) / f"w{args.rss_width}d{args.rss_depth}.pt"
        reference = _image(4096)
        start = time.perf_counter()
        predictor.predict_mask(reference)
        ref_us = (time.perf_counter() - start) / reference[:, :, 0].size * 1e6
        print(f"\nwhole-slide path: milesial base width {args.rss_width}, depth {args.rss_depth}, "
              f"precision auto; in-memory 4096x4096 reference {ref_us:.3f} us/px")  # fmt: skip
        print(f"{'image':>14s} {'write s':>8s} {'predict s':>10s} {'us/px':>7s} {'vs ref':>7s} "
              f"{'peak RSS MiB':>13s} {'output':>10s}")  # fmt: skip
        for size in args.wsi_sizes:
            tif = Path(folder) / f"slide{size}.tif"
            start = time.perf_counter()
            _write_tiled_tiff(tif, size)
            written = time.perf_counter() - start
            out = Path(folder) / f"out{size}"
            code = ("import resource, sys; from unetkit.cli import main; "
                    "rc = main(sys.argv[1:]); "
                    "print('RSS', [float(l.split()[1]) / 1024 for l in open('/proc/self/status') "
                    "if l.startswith('VmHWM:')][0]); "
                    "sys.exit(rc)")  # fmt: skip
            cmd = [sys.executable, "-c", code, "predict", str(ckpt), str(tif), "-o", str(out),
                   "--strategy", "tile", "--no-progress"]  # fmt: skip
            start = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
            rss = float(run.stdout.split("RSS")[-1])
            import tifffile

            with tifffile.TiffFile(out / f"slide{size}.tif") as mask:
                page = mask.pages[0]
                ok = page.is_tiled and (page.imagelength, page.imagewidth) == (size, size)
            us = seconds / size**2 * 1e6
            verdict = "tiled ok" if ok else "WRONG"
            print(f"{size:>6d}x{size:<7d} {written:8.0f} {seconds:10.0f} {us:7.3f} "
                  f"{us / ref_us:6.2f}x {rss:13.0f} {verdict:>10s}")  # fmt: skip
            tif.unlink()


def _throughput(args) -> list[tuple[str, float]]:
    from unetkit.device import cpu_has_bf16
    from unetkit.infer.tiling import plan_image

    big, small = _image(args.size), [_image(512)] * args.small
    precisions = ["fp32"] + (["bf16"] if cpu_has_bf16() else [])
    tiling = {k: v for k, v in (("overlap", args.overlap), ("batch_size", args.batch)) if v}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for precision in precisions:
            full = _predictor(args.width, args.depth, folder, strategy="full", precision=precision)
            rows.append((f"{precision} whole 512x512 images (reference)", _rate(full, small)))
            tiled = _predictor(
                args.width, args.depth, folder, strategy="tile", precision=precision, **tiling
            )
            rows.append((f"{precision} tiled {args.size}x{args.size}", _rate(tiled, [big])))
    side = tiled._tile()
    plans = plan_image((args.size, args.size), side, tiled.config.overlap, tiled.rule)
    computed = len(plans[0].windows) * plans[0].tile_in * len(plans[1].windows) * plans[1].tile_in
    note = f"{len(plans[0].windows)}x{len(plans[1].windows)} tiles of {plans[0].tile_in} px"
    rows.append((f"({note}: {computed / args.size**2:.2f}x the pixels)", float("nan")))
    return rows


def _trained_full_width(steps: int = 15):
    """milesial at full width, 3 -> 2 classes, ``steps`` AdamW steps on synthetic cells."""
    import numpy as np
    import torch

    from unetkit import build_model
    from unetkit.data.synthetic import make_image_and_mask

    torch.manual_seed(0)
    model = build_model("milesial", in_channels=3, out_channels=2).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    image, mask = make_image_and_mask((512, 512), seed=1)
    x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.25).permute(2, 0, 1)
    y = torch.from_numpy((mask > 0).astype(np.int64))
    rng = np.random.default_rng(0)
    for _ in range(steps):
        corners = rng.integers(0, 512 - 256, (4, 2))
        xb = torch.stack([x[:, a : a + 256, b : b + 256] for a, b in corners])
        yb = torch.stack([y[a : a + 256, b : b + 256] for a, b in corners])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _seconds(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(args) -> None:
    """The issue-13 table: the same network, untiled ceiling vs unetkit vs MONAI (bf16)."""
    import numpy as np
    import torch

    from unetkit import DataConfig, PredictConfig, Predictor, make_checkpoint, save_checkpoint
    from unetkit.data.synthetic import make_image_and_mask
    from unetkit.device import cpu_has_bf16, performance_setup
    from unetkit.infer.tiling import plan_image

    if args.monai:
        sys.path.insert(0, args.monai)
    performance_setup()
    precision = "bf16" if cpu_has_bf16() else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    side = args.compare_size
    model = _trained_full_width()
    image = make_image_and_mask((side, side), seed=2)[0]
    mp = side * side / 1e6
    rows: list[tuple[str, float, float, float]] = []  # name, MP/s, computed pixels, agreement

    # the untiled ceiling: the network alone on batches of 4 x 256^2, no overlap
    x = torch.randn(4, 3, 256, 256).contiguous(memory_format=torch.channels_last)

    def raw():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            for _ in range(max(1, side * side // (4 * 256 * 256))):
                model(x)

    ceiling = mp / _seconds(raw, args.repeat)
    rows.append(("raw network, 4 x 256^2 batches, no overlap", ceiling, 1.0, float("nan")))
    with tempfile.TemporaryDirectory() as folder:
        pre = DataConfig(channels=3, resize="random-crop", size=(256, 256), mean=(0.5,),
                         std=(0.25,), normalize="fixed")  # fmt: skip
        ckpt = make_checkpoint(model, classes=["bg", "fg"], palette=[[0, 0, 0], [255, 0, 0]],
                               preprocessing=pre)  # fmt: skip
        path = save_checkpoint(ckpt, Path(folder) / "full-width.pt")
        whole = Predictor.from_checkpoint(path, PredictConfig(strategy="full",
                                                              precision=precision))  # fmt: skip
        reference = whole.predict_mask(image)
        settings = {
            "unetkit Predictor, defaults": {},
            "unetkit, previous defaults (256, 0.25, batch 4)": dict(
                tile=(256, 256), overlap=0.25, batch_size=4
            ),
        }
        for name, kw in settings.items():
            predictor = Predictor.from_checkpoint(
                path, PredictConfig(strategy="tile", precision=precision, **kw)
            )
            rate = mp / _seconds(lambda p=predictor: p.predict_mask(image), args.repeat)
            plans = plan_image((side, side), predictor._tile(), predictor.config.overlap,
                               predictor.rule)  # fmt: skip
            ran = len(plans[0].windows) * plans[0].tile_in * len(plans[1].windows)
            ran *= plans[1].tile_in
            agree = float(np.mean(predictor.predict_mask(image) == reference))
            rows.append((name, rate, ran / side**2, agree))
        monai = _monai_rate(model, image, dtype, args.repeat, reference)
        if monai is not None:
            rows.append(("MONAI sliding window (256, 0.25, gaussian)", *monai))
    print(f"\n{side}x{side} RGB, milesial full width (31.0 M parameters, trained 15 steps), "
          f"{precision} autocast + channels_last, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'run':50s} {'MP/s':>6s} {'vs ceiling':>10s} {'vs MONAI':>8s} {'pixels run':>10s} "
          f"{'= whole':>8s}")  # fmt: skip
    peer = monai[0] if monai is not None else float("nan")
    for name, rate, ran, agree in rows:
        agreement = f"{agree:8.4%}" if agree == agree else f"{'':8s}"
        print(f"{name:50s} {rate:6.3f} {rate / ceiling:10.0%} {rate / peer:7.2f}x "
              f"{ran:9.2f}x {agreement}")  # fmt: skip


def _monai_rate(model, image, dtype, repeat: int, reference):
    """MONAI's sliding window on the same network, or None when monai is not importable."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        print("(monai is not importable: its row is left out; see --monai)")
        return None
    import numpy as np
    import torch

    def run():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.25)
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            out = sliding_window_inference(
                x, (256, 256), 4,
                lambda t: model(t.contiguous(memory_format=torch.channels_last)),
                overlap=0.25, mode="gaussian",
            )  # fmt: skip
        return out.argmax(1)[0].numpy()

    side = image.shape[0]
    rate = side * side / 1e6 / _seconds(run, repeat)
    stride = 192  # 256 * (1 - 0.25)
    count = -(-(side - 256) // stride) + 1
    agree = float(np.mean(run() == reference))
    return rate, (count * 256 / side) ** 2, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="Side of the tiled image.")
    parser.add_argument("--small", type=int, default=4, help="Whole 512x512 reference images.")
    parser.add_argument("--width", type=int, default=8, help="Base width of the model.")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--overlap", type=float, help="Tile overlap (default: Predictor's).")
    parser.add_argument("--batch", type=int, help="Tiles per forward pass (default: auto).")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[4096, 10000])
    parser.add_argument("--rss-width", type=int, default=4, help="Base width for the RSS runs.")
    parser.add_argument("--rss-depth", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--cli-rss-sizes", type=int, nargs="*", default=[2048, 4096, 8192],
        help="Peak RSS of `unetkit predict` on N x N RGB PNGs (cli_rss.py).",
    )  # fmt: skip
    parser.add_argument("--wsi-sizes", type=int, nargs="*", default=[], help="Tiled TIFF sides.")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="Skip the full-width comparison with the ceiling and MONAI.",
    )
    parser.add_argument("--compare-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs per row (median).")
    parser.add_argument("--monai", help="A folder holding monai (pip install --target).")
    parser.add_argument(
        "--int8", action="store_true", help="int8 vs bf16 / fp32: speed and accuracy (int8.py)."
    )
    parser.add_argument("--int8-dir", help="Keep (and reuse) the int8 bench's models here.")
    parser.add_argument(
        "--int8-budget", type=float, default=5.0, help="Training minutes per int8 bench model."
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.rss_width, args.rss_depth)))
        return
    if args.int8:
        from int8 import run as int8_rows

        int8_rows(args)
    if args.compare:
        _compare(args)
    if not args.skip_throughput:
        tiling = f"overlap {args.overlap}, batch {args.batch} (None: Predictor's default)"
        print(f"milesial base width {args.width}, depth {args.depth}, 3 -> 2 classes; {tiling}")
        print(f"{'run':44s} {'MP/s':>8s}")
        for name, rate in _throughput(args):
            print(f"{name:44s} {rate:8.2f}" if rate == rate else name)
    if args.rss_sizes:
        print(f"\npeak RSS, milesial base width {args.rss_width}, depth {args.rss_depth}, fp32, "
              "default tiles, RGB uint8 input, uint8 mask output")  # fmt: skip
        print(f"{'image':>12s} {'before MiB':>11s} {'peak MiB':>10s} {'seconds':>9s}")
        for size in args.rss_sizes:
            model = ["--rss-width", str(args.rss_width), "--rss-depth", str(args.rss_depth)]
            cmd = [sys.executable, __file__, "--child", str(size), *model]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{size:>5d}x{size:<6d} {r['loaded_mib']:11.0f} {r['peak_mib']:10.0f} "
                  f"{r['seconds']:9.1f}")  # fmt: skip
    if args.cli_rss_sizes:
        from cli_rss import run as cli_rss

        cli_rss(args.cli_rss_sizes)
    if args.wsi_sizes:
        _wsi(args)


if __name__ == "__main__":
    main()
