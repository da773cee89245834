"""Cellpose 3.1.1.3's classic network trained from scratch as its CLI does, for ``dsb_instances``.

Runs in its own interpreter with the Cellpose peer folder first on the path (torch comes from
unetkit's environment), never in unetkit's process::

    PYTHONPATH=/tmp/peers/cellpose python bench/peer_cellpose.py TRAIN TEST OUT --budget 15

TRAIN holds ``images/*.png`` and ``instances/*.png``, TEST ``images/*.png``. What
``python -m cellpose --train --dir TRAIN --pretrained_model None --chan 0 --chan2 0`` does
with the CLI's defaults: ``CellposeModel(pretrained_model=False, nchan=2, diam_mean=30)`` (the
CPnet backbone, no downloaded weights), then ``train.train_seg`` with SGD lr 0.2 (momentum 0.9,
weight decay 1e-5), batch 8, every image each epoch, ``min_train_masks=5``, its flows, 224 px
crops rescaled to the 30 px mean diameter, its 1 / 99 % normalisation. Where this differs:

* ``n_epochs`` comes from the budget instead of 500: train_seg warms the learning rate up over
  10 epochs and halves it over the last 50 (over 100 epochs) or 100 (over 300), so the run must
  know its length. One epoch of ``train_seg`` on a copy of the network (its first epoch, at
  learning rate 0, after a warm-up batch) measures the epoch time; the budget covers the
  flows, that probe and the run;
* the flows are computed by the same ``dynamics.labels_to_flows`` before ``train_seg`` (which
  then finds them precomputed) so that their time is known when the epochs are chosen;
* channels ``[0, 0]`` for every image: grey ones are R = G = B, and the colour (H&E-like)
  images are segmented on their channel mean, as Cellpose segments any image with ``--chan 0``;
* prediction passes the training set's mean diameter (``eval(diameter=None)`` on a model
  trained in memory would assume 30 px; the CLI's ``--diameter 0`` does the same).

Writes ``OUT/labels/STEM.tif`` (int32 instance ids) and ``OUT/run.json``; exits with status 3
when Cellpose cannot be imported.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from peer_args import not_importable, parse

CHANNELS = [0, 0]
CLI = dict(learning_rate=0.2, weight_decay=1e-5, SGD=True, batch_size=8, min_train_masks=5,
           nimg_per_epoch=None, save_every=100)  # fmt: skip


def probe_epoch(train_seg, net, images, flows, folder: Path, fit: dict) -> tuple[float, float]:
    """Seconds of one warm-up batch and of one epoch of ``train_seg`` on a copy of ``net``.

    The copy trains at train_seg's first learning rate (0). The first batches of a fresh
    process are much slower than the rest (seen in smoke runs), so a warm-up batch precedes
    the timed epoch.
    """
    probe = copy.deepcopy(net)
    folder.mkdir(exist_ok=True)
    kwargs = dict(fit, n_epochs=1, save_path=str(folder), model_name="probe")
    tic = time.monotonic()
    train_seg(probe, images, flows, **dict(kwargs, nimg_per_epoch=fit["batch_size"]))
    warmup = time.monotonic() - tic
    train_seg(probe, images, flows, **kwargs)
    seconds = time.monotonic() - tic - warmup
    shutil.rmtree(folder)
    return warmup, seconds


def main() -> None:
    args = parse(__doc__)
    try:
        import tifffile
        import torch
        from cellpose import dynamics, io, models, train, version
    except ImportError as err:
        raise not_importable(err) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    names = sorted(p.name for p in (args.train / "images").glob("*.png"))
    images = [io.imread(str(args.train / "images" / n)) for n in names]
    labels = [io.imread(str(args.train / "instances" / n)) for n in names]
    device, gpu = models.assign_device(use_torch=True, gpu=torch.cuda.is_available())
    model = models.CellposeModel(device=device, pretrained_model=False, model_type=None,
                                 diam_mean=30.0, nchan=2, backbone="default")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    fit = dict(channels=CHANNELS, normalize=True, **CLI)
    start = time.monotonic()
    flows = dynamics.labels_to_flows(labels, files=None, device=device)
    flows_s = time.monotonic() - start
    warmup_s, epoch_s = probe_epoch(
        train.train_seg, model.net, images, flows, args.out / "probe", fit
    )
    n_epochs = max(1, int((args.budget * 60 - (time.monotonic() - start)) // epoch_s))
    print(f"flows {flows_s:.0f} s, one epoch {epoch_s:.1f} s: {n_epochs} epochs", flush=True)
    path = train.train_seg(model.net, images, flows, n_epochs=n_epochs,
                           save_path=str(args.out), model_name="cellpose", **fit)[0]  # fmt: skip
    train_s = time.monotonic() - start

    model = models.CellposeModel(device=device, pretrained_model=str(path), nchan=2)
    diameter = float(model.diam_labels)

    def predict(x: np.ndarray) -> np.ndarray:
        return model.eval(x, channels=CHANNELS, diameter=diameter)[0]

    predict(images[0])  # warm-up, untimed
    (args.out / "labels").mkdir(parents=True, exist_ok=True)
    seconds = {}
    for file in sorted((args.test / "images").glob("*.png")):
        image = io.imread(str(file))
        tic = time.perf_counter()
        found = predict(image)
        seconds[file.stem] = time.perf_counter() - tic
        tifffile.imwrite(args.out / "labels" / f"{file.stem}.tif", found.astype(np.int32))
    run = {
        "peer": f"cellpose {version}", "budget_s": args.budget * 60, "train_s": train_s,
        "epochs": n_epochs, "flows_s": flows_s, "probe_s": {"warmup": warmup_s, "epoch": epoch_s},
        "epoch_s": (train_s - flows_s - warmup_s - epoch_s) / n_epochs, "diameter": diameter,
        "channels": CHANNELS, "device": str(device), "cli": CLI, "predict_s": seconds,
    }  # fmt: skip
    (args.out / "run.json").write_text(json.dumps(run, indent=2))
    print(f"{n_epochs} epochs in {train_s:.0f} s, mean diameter {diameter:.1f} px; "
          f"predicted {len(seconds)} images")  # fmt: skip


if __name__ == "__main__":
    main()
