"""Training-step throughput: a naive fp32 loop vs channels_last, bf16 autocast and the allocator.

Each configuration runs in its own process (the allocator setting is process-wide), with the
same model, batch and seed; the table reports images/s and the speed-up over naive fp32.

    python bench/train_step.py --base-width 16 --size 256 --batch 4 --steps 6
    python bench/train_step.py --device cuda --base-width 32 --batch 16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONFIGS = {
    "fp32 (naive)": dict(precision="fp32", channels_last=False, allocator=False),
    "fp32 + channels_last": dict(precision="fp32", channels_last=True, allocator=False),
    "bf16": dict(precision="bf16", channels_last=False, allocator=False),
    "bf16 + channels_last": dict(precision="bf16", channels_last=True, allocator=False),
    "bf16 + channels_last + allocator": dict(precision="bf16", channels_last=True, allocator=True),
    "... + torch.compile": dict(
        precision="bf16", channels_last=True, allocator=True, compiled=True
    ),
}


def run_one(
    args, precision: str, channels_last: bool, allocator: bool, compiled: bool = False
) -> dict:
    import torch

    device = torch.device(args.device)

    from unetkit import build_model
    from unetkit.device import keep_large_buffers
    from unetkit.train.losses import build_loss

    if allocator:
        keep_large_buffers()
    torch.manual_seed(0)
    model = build_model(args.preset, base_width=args.base_width, in_channels=1, num_classes=2)
    model = model.to(device)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 2, (args.batch, args.size, args.size), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = build_loss("ce+dice", "multiclass", 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model  # as `train --compile` does
    times = []
    for _ in range(args.steps + 2):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = forward(x)
        loss = loss_fn(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = sorted(times[2:])[len(times[2:]) // 2]
    # the first step holds torch.compile's compilation (and, uncompiled, the warm-up)
    return {"images_per_s": args.batch / steady, "step_s": steady, "first_s": times[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="milesial")
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--only", help="comma-separated rows to run (by number, 1-based); naive fp32 always runs"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args, **CONFIGS[args.child])))
        return
    rows = {}
    names = list(CONFIGS)
    if args.only:
        keep = {int(i) - 1 for i in args.only.split(",")} | {0}
        names = [n for i, n in enumerate(names) if i in keep]
    for name in names:
        cmd = [
            sys.executable,
            __file__,
            "--preset",
            args.preset,
            "--base-width",
            str(args.base_width),
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--child",
            name,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
    ref = rows["fp32 (naive)"]["images_per_s"]
    print(
        f"{args.preset} base width {args.base_width}, batch {args.batch} x 1 x {args.size}^2, "
        f"{args.device} training step (forward + backward + AdamW), median of {args.steps}"
    )
    print(f"{'configuration':<34}{'step s':>8}{'img/s':>8}{'speed-up':>10}{'first step s':>14}")
    for name, r in rows.items():
        print(
            f"{name:<34}{r['step_s']:>8.3f}{r['images_per_s']:>8.1f}"
            f"{r['images_per_s'] / ref:>9.2f}x{r['first_s']:>14.1f}"
        )


if __name__ == "__main__":
    main()
