"""StarDist 2D trained from scratch by its own notebook, for ``bench/dsb_instances.py``.

Runs in the StarDist peer folder's interpreter, never in unetkit's process::

    PYTHONPATH=/tmp/peers/stardist python bench/peer_stardist.py TRAIN TEST OUT --budget 15

TRAIN holds ``images/*.png`` and ``instances/*.png``, TEST ``images/*.png``. The recipe is
stardist's ``examples/2D/2_training.ipynb``: per-channel 1 / 99.8 % percentile normalisation,
``fill_label_holes``, 15 % of the training images held out for validation (``RandomState(42)``),
``Config2D(n_rays=32, grid=(2, 2))`` with its defaults (256 x 256 patches, batch 4, Adam 3e-4,
reduce-on-plateau, 100 steps an epoch), the notebook's augmenter (random flips / rot90, intensity
scale and shift, Gaussian noise), then ``optimize_thresholds`` on the validation images.
Where this differs, and why:

* every image is read as 3 channels (the DSB PNGs are RGB; grey ones have R = G = B), so one
  model takes both kinds, each channel normalised on its own as the notebook does;
* training stops at the wall-clock budget (a Keras callback after the step that crosses it)
  instead of after 400 epochs, then ``train()`` loads the best validation weights as it always
  does; the budget counts ``train()`` only (threshold optimisation follows, timed apart);
* ``train_tensorboard=False`` (tensorflow-cpu has no tensorboard).

Writes ``OUT/labels/STEM.tif`` (int32 instance ids) and ``OUT/run.json``; exits with
status 3 when StarDist or TensorFlow cannot be imported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from peer_args import not_importable, parse


def read_rgb(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    image = iio.imread(path)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)  # (H, W, 3)
    return image[..., :3]


def read_labels(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path)).astype(np.int32)


def augmenter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's augmenter: random flips / axis permutation, intensity change, noise."""
    perm = tuple(np.random.permutation(2))
    x, y = x.transpose(perm + (2,)), y.transpose(perm)
    for axis in range(2):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    x = x + 0.02 * np.random.uniform(0, 1) * np.random.normal(0, 1, x.shape)
    return x, y


def main() -> None:
    args = parse(__doc__)
    try:
        import imageio  # noqa: F401
        import tifffile
        from csbdeep.utils import normalize
        from csbdeep.utils.tf import keras_import
        from stardist import __version__, calculate_extents, fill_label_holes
        from stardist.models import Config2D, StarDist2D
    except ImportError as err:
        raise not_importable(err) from None

    Callback = keras_import("callbacks", "Callback")

    class Budget(Callback):
        """Stops training after the step that crosses ``seconds`` from ``start``."""

        def __init__(self, start: float, seconds: float):
            super().__init__()
            self.start, self.seconds, self.steps, self.epochs = start, seconds, 0, 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.monotonic() - self.start >= self.seconds:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.epochs = epoch + 1

    np.random.seed(42)
    names = sorted(p.name for p in (args.train / "images").glob("*.png"))
    X = [normalize(read_rgb(args.train / "images" / n), 1, 99.8, axis=(0, 1)) for n in names]
    Y = [fill_label_holes(read_labels(args.train / "instances" / n)) for n in names]
    rng = np.random.RandomState(42)
    ind = rng.permutation(len(X))
    n_val = max(1, int(round(0.15 * len(ind))))
    ind_train, ind_val = ind[:-n_val], ind[-n_val:]
    X_val, Y_val = [X[i] for i in ind_val], [Y[i] for i in ind_val]
    X_trn, Y_trn = [X[i] for i in ind_train], [Y[i] for i in ind_train]
    print(f"images: {len(X)} ({len(X_trn)} training, {len(X_val)} validation)", flush=True)

    conf = Config2D(n_rays=32, grid=(2, 2), use_gpu=False, n_channel_in=3,
                    train_tensorboard=False)  # fmt: skip
    model = StarDist2D(conf, name="stardist", basedir=str(args.out))
    fov = np.array(model._axes_tile_overlap("YX"))
    print(f"median object size {calculate_extents(Y, np.median)}, field of view {fov}")
    model.prepare_for_training()
    start = time.monotonic()
    budget = Budget(start, args.budget * 60)
    model.callbacks.append(budget)
    history = model.train(X_trn, Y_trn, validation_data=(X_val, Y_val), augmenter=augmenter)
    train_s = time.monotonic() - start
    start = time.monotonic()
    thresholds = model.optimize_thresholds(X_val, Y_val)
    thresholds_s = time.monotonic() - start

    def predict(x: np.ndarray) -> np.ndarray:
        x = normalize(x, 1, 99.8, axis=(0, 1))
        n_tiles = model._guess_n_tiles(x)
        return model.predict_instances(x, n_tiles=n_tiles, show_tile_progress=False)[0]

    predict(read_rgb(args.train / "images" / names[ind_val[0]]))  # warm-up, untimed
    (args.out / "labels").mkdir(parents=True, exist_ok=True)
    seconds = {}
    for path in sorted((args.test / "images").glob("*.png")):
        image = read_rgb(path)
        start = time.perf_counter()
        labels = predict(image)
        seconds[path.stem] = time.perf_counter() - start
        tifffile.imwrite(args.out / "labels" / f"{path.stem}.tif", labels.astype(np.int32))
    run = {
        "peer": f"stardist {__version__}", "budget_s": args.budget * 60, "train_s": train_s,
        "steps": budget.steps, "epochs": budget.epochs, "thresholds": thresholds,
        "thresholds_s": thresholds_s, "val_loss": history.history.get("val_loss"),
        "n_train": len(X_trn), "n_val": len(X_val), "predict_s": seconds,
    }  # fmt: skip
    (args.out / "run.json").write_text(json.dumps(run, indent=2, default=float))
    print(f"{budget.steps} steps ({budget.epochs} epochs) in {train_s:.0f} s; thresholds "
          f"{thresholds} in {thresholds_s:.0f} s; predicted {len(seconds)} images")  # fmt: skip


if __name__ == "__main__":
    main()
