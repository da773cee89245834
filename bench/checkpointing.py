"""Peak memory of one training step with and without gradient checkpointing.

Each configuration runs in its own subprocess so its peak resident memory (CPU) or peak CUDA
allocation is its own. Prints a table; the reference is the same step without checkpointing.

    python bench/checkpointing.py --preset milesial --size 256 --batch 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _step(preset: str, size: int, batch: int, checkpointing: bool, device: str) -> dict:
    import torch

    from unetkit import build_model

    torch.manual_seed(0)
    model = build_model(preset, checkpointing=checkpointing).to(device).train()
    x = torch.randn(batch, model.config.in_channels, size, size, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model(x).square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"peak_mib": peak, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="milesial")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = _step(args.preset, args.size, args.batch, args.child == "on", args.device)
        print(json.dumps(result))
        return
    rows = {}
    for mode in ("off", "on"):
        cmd = [
            sys.executable,
            __file__,
            "--preset",
            args.preset,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--device",
            args.device,
            "--child",
            mode,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    ref = rows["off"]
    what = "peak CUDA MiB" if args.device == "cuda" else "step peak RSS MiB"
    print(f"{args.preset}, batch {args.batch} x {args.size}^2, {args.device}: one training step")
    print(f"{'checkpointing':<14} {what:>18} {'vs off':>8} {'step s':>8} {'vs off':>8}")
    for mode, r in rows.items():
        print(
            f"{mode:<14} {r['peak_mib']:>18.0f} {r['peak_mib'] / ref['peak_mib']:>8.2f} "
            f"{r['seconds']:>8.2f} {r['seconds'] / ref['seconds']:>8.2f}"
        )


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
