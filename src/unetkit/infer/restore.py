"""Image-to-image prediction for ``restore`` / ``x3`` models: a checkpoint alone -> images.

Each input ``NAME`` gives ``NAME.png``: the network's output at the input's size (times the
model's pixel-shuffle scale), de-normalised back to the input's dtype. Files are written
atomically; unreadable inputs are reported in one line and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Checkpoint, load_model
from ..data.imageio import image_to_tensor, read_image, write_image
from ..device import autocast, resolve_device, resolve_precision
from ..errors import UnetkitError
from ..files import clean_stale_temps
from ..progress import progress as progress_bar
from .outputs import PredictReport, collect_inputs, record_failure


class Restorer:
    """Run an image-to-image model on whole images of any size (mirror-padded to legal sizes).

    Args:
        model: the network (eval mode).
        checkpoint: its checkpoint (preprocessing, task).
        device, precision: where and how to run (``auto`` picks as for training).
    """

    def __init__(self, model, checkpoint: Checkpoint, device: torch.device, precision: str):
        if checkpoint.task != "regression":
            raise UnetkitError(f"{checkpoint.task} model: use Predictor for class masks")
        self.model, self.checkpoint = model, checkpoint
        self.device, self.precision = device, precision

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        precision: str = "auto",
        checkpoint: Checkpoint | None = None,
    ) -> Restorer:
        dev = resolve_device(device)
        model, ckpt = load_model(path, dev, checkpoint)
        if ckpt.task != "regression":
            raise UnetkitError(f"{path}: a {ckpt.task} model predicts masks, not images")
        return cls(model, ckpt, dev, resolve_precision(precision, dev))

    @torch.inference_mode()
    def restore(self, image: np.ndarray) -> np.ndarray:
        """The model's output image.

        Args:
            image: (H, W) or (H, W, C) uint8 / uint16 / float in [0, 1].

        Returns:
            (H * s, W * s, C) in the input's dtype (s: the model's pixel-shuffle scale).
        """
        pre = self.checkpoint.preprocessing
        x = image_to_tensor(image, pre)[None].to(self.device)  # (1, C, H, W)
        with autocast(self.device, self.precision):
            y = self.model.forward_any(x).float()[0]  # (C, H * s, W * s)
        mean = torch.tensor(pre.mean, device=y.device).view(-1, 1, 1)
        std = torch.tensor(pre.std, device=y.device).view(-1, 1, 1)
        y = (y * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (H', W', C) in [0, 1]
        dtype = np.asarray(image).dtype
        if np.issubdtype(dtype, np.integer):
            return np.rint(y * np.iinfo(dtype).max).astype(dtype)
        return y.astype(np.float32)


def restore_paths(
    restorer: Restorer,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    skip_existing: bool = False,
    progress: bool = True,
) -> PredictReport:
    """Write ``NAME.png`` for every image named by ``inputs`` (files, folders, globs)."""
    out = Path(out_dir)
    paths = collect_inputs(inputs, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # what a killed run left half-written
    report = PredictReport()
    channels = restorer.checkpoint.preprocessing.channels
    for path in progress_bar(paths, desc="restore", unit="img", disable=not progress):
        target = out / f"{path.stem}.png"
        if skip_existing and target.is_file():
            report.skipped.append(path)
            continue
        try:
            write_image(target, restorer.restore(read_image(path, channels=channels)))
        except (UnetkitError, OSError, ValueError) as exc:
            record_failure(report, path, exc)
            continue
        report.written.append(path)
    return report
