"""Data time vs step time: does batch augmentation keep up with training on this machine?

Measures, for one batch (default 4x3x256x256): loading the samples from a cached
``SegmentationDataset`` (random crops) and collating them, augmenting the batch with the default
probabilities and with every augmentation on every sample, and one training step
(forward + backward + AdamW) of a mid-size U-Net (milesial, base width 32, bf16 autocast and
channels_last on CPU). Prints the median times and the data share of a step.

    python bench/augment.py            # about a minute on 2 CPU cores
    python bench/augment.py --threads 1   # on a shared, busy CPU fewer threads can win
    python bench/augment.py --device cuda --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median_time(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _dataset(root: Path, size: int, batch: int):
    from unetkit.config import DataConfig
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.prepare import prepare
    from unetkit.data.synthetic import make_labelme_folder

    side = size + size // 4
    make_labelme_folder(root / "lm", n_images=batch, size=(side, side), seed=0)
    prepare(root / "lm", root / "ds", val_fraction=0)
    cfg = DataConfig(channels=3, resize="random-crop", size=(size, size), mean=(0.5,), std=(0.25,))
    ds = SegmentationDataset(root / "ds", config=cfg, train=True)
    for i in range(len(ds)):  # fill the cache: the steady state of a training run
        ds[i]
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed augmentation batches")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unetkit.config import AugmentConfig
    from unetkit.data.transforms import Augmenter

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp), args.size, args.batch)

        def load():
            items = [ds[i] for i in range(args.batch)]
            return torch.stack([it["image"] for it in items]), torch.stack(
                [it["mask"] for it in items]
            )

        load_s = _median_time(load, args.repeats, sync)
    images, masks = (t.to(device) for t in load())
    gen = torch.Generator().manual_seed(0)
    always = AugmentConfig(affine=1.0, elastic=1.0, blur=1.0)
    aug_default = Augmenter(AugmentConfig())
    aug_all = Augmenter(always)
    default_s = _median_time(lambda: aug_default(images, masks, generator=gen), args.repeats, sync)
    all_s = _median_time(lambda: aug_all(images, masks, generator=gen), args.repeats, sync)

    step_s, params = _time_step(args, images, masks, device, sync)
    _report(args, device, params, load_s, default_s, all_s, step_s)


def _time_step(args, images, masks, device, sync) -> tuple[float, float]:
    """Median seconds of forward + backward + AdamW step, and the model's parameters (M)."""
    from unetkit import build_model

    model = build_model("milesial", base_width=args.base_width, in_channels=3, out_channels=3)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = images.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), masks, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    params = sum(p.numel() for p in model.parameters()) / 1e6
    return _median_time(step, args.steps, sync), params


def _report(args, device, params, load_s, default_s, all_s, step_s) -> None:
    b, s = args.batch, args.size
    print(f"batch {b}x3x{s}x{s}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'stage':<44}{'ms/batch':>10}{'share of step':>15}")
    rows = [
        ("load + collate (cached, random crop)", load_s),
        ("augment, default probabilities", default_s),
        ("augment, every op on every sample", all_s),
        (f"train step (milesial w{args.base_width}, {params:.1f}M, bf16+CL)", step_s),
    ]
    for name, sec in rows:
        print(f"{name:<44}{sec * 1e3:>10.1f}")
    for label, aug_s in (("default", default_s), ("all on", all_s)):
        data = load_s + aug_s
        share = data / (data + step_s)
        print(f"{f'data share, augment {label}':<44}{data * 1e3:>10.1f}{share:>14.1%}")


if __name__ == "__main__":
    main()
