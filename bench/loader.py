"""The data loader's side of a GPU training step, measured on a CPU (issue 27, build 5).

On a GPU the network's step is fast (one H100 ran the bare DSB step at about 1000 images/s)
and the loop waits for crops unless enough loading processes feed it. This bench builds the
training set of the DSB 2018 dev split as ``unetkit train`` does for the task (the paper's
weight map; for ``instance`` the boundary target from ``instances/``), caches it by reading
every image once, then times ``__getitem__`` in this one process: crops per second per
loading process, at the CPU recipe's patch (256 x 256) and the GPU recipe's (the median image,
256 x 320 here, under the 512 px cap). The last column divides a GPU step rate
(``--step-rate``, images/s) by it: the loading processes that rate needs. Augmentation is
not in it: it runs on the training device, on the batch.

    python bench/loader.py
    python bench/loader.py --tasks instance --items 400 --step-rate 1045
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from dsb import split
from dsb_instances import link_dataset


def crops_per_second(train_dir, task: str, size: tuple[int, int], items: int) -> float:
    from unetkit.config import DataConfig, TrainConfig
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.layout import describe_dataset
    from unetkit.train.criterion import weight_map_fn

    info = describe_dataset(train_dir)
    cfg = TrainConfig(task=task, classes=list(info.classes), weight_map=True)
    data = DataConfig(channels=3, resize="random-crop", size=size, normalize="percentile")
    dataset = SegmentationDataset(
        info, info.stems, data, train=True, weight_fn=weight_map_fn(cfg, info), seed=0,
        boundary_width=2 if task == "instance" else 0,
    )  # fmt: skip
    for i in range(len(dataset)):  # fills the cache: training reads each image once too
        dataset[i]
    start = time.perf_counter()
    for i in range(items):
        dataset.set_epoch(1 + i // len(dataset))
        dataset[i % len(dataset)]
    return items / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="multiclass,instance")
    parser.add_argument("--items", type=int, default=300, help="timed crops per row")
    parser.add_argument("--step-rate", type=float, default=1045.0, help="GPU images/s to feed")
    parser.add_argument("--work", default=None, help="folder for the linked training set")
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    torch.set_num_threads(1)  # a loading process runs one thread
    work = Path(args.work or tempfile.mkdtemp(prefix="loader-"))
    train_dir = work / "train"
    if not train_dir.exists():
        link_dataset(train_dir, split()[0])
    print(f"loader: crops/s of one process, {args.items} crops after the cache is filled")
    print(f"{'task':<12}{'patch':>10}{'crops/s':>10}{'processes for ' + str(args.step_rate):>22}")
    for task in args.tasks.split(","):
        for size in ((256, 256), (256, 320)):
            rate = crops_per_second(train_dir, task, size, args.items)
            need = math.ceil(args.step_rate / rate)
            print(f"{task:<12}{f'{size[0]}x{size[1]}':>10}{rate:>10.0f}{need:>22}")


if __name__ == "__main__":
    main()
