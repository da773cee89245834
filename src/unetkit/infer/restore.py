"""Image-to-image prediction for ``restore`` / ``x3`` models: a checkpoint alone -> images.

Each input ``NAME`` gives ``NAME.png``: the network's output at the input's size (times the
model's pixel-shuffle scale), predicted tile by tile as ``Predictor`` does, de-normalised back
to the input's dtype. Files are written
atomically; unreadable inputs are reported in one line and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import Checkpoint, load_model
from ..data.imageio import read_image
from ..data.largeimage import output_stem
from ..data.normalize import image_to_tensor
from ..data.writers import write_image
from ..device import autocast, resolve_device, resolve_precision
from ..errors import UnetkitError
from ..files import clean_stale_temps
from ..progress import progress as progress_bar
from .inputs import collect_inputs
from .outputs import PredictReport, record_failure
from .tiling import SizeRule, predict_tiled


class Restorer:
    """Run an image-to-image model on images of any size, tile by tile.

    The same tiled prediction as ``Predictor`` (``infer.tiling.predict_tiled``: mirror-padded
    borders, blended overlaps), so the network never sees more than one batch of tiles and
    memory does not grow with the image. A pixel-shuffle model's output (``x3``) is tiled as
    ``scale**2`` channels per input pixel (``pixel_unshuffle``) and shuffled back at the end.

    Args:
        model: the network (eval mode).
        checkpoint: its checkpoint (preprocessing, task).
        device, precision: where and how to run (``auto`` picks as for training).
        tile: input tile ``(h, w)`` (made legal); default: the training size; None: the whole
            image at once (mirror-padded to a legal size, as ``UNet.forward_any``).
        overlap, blend, batch_size: as for ``Predictor`` (``PredictConfig``).
    """

    def __init__(
        self,
        model,
        checkpoint: Checkpoint,
        device: torch.device,
        precision: str,
        *,
        tile: tuple[int, int] | None | str = "training",
        overlap: float = 0.25,
        blend: str = "gaussian",
        batch_size: int = 4,
    ):
        if checkpoint.task != "regression":
            raise UnetkitError(f"{checkpoint.task} model: use Predictor for class masks")
        self.model, self.checkpoint = model, checkpoint
        self.device, self.precision = device, precision
        self.tile: tuple[int, int] | None = (
            checkpoint.preprocessing.size_or() if isinstance(tile, str) else tile
        )
        self.overlap, self.blend, self.batch_size = overlap, blend, batch_size
        scale = int(model.config.scale)
        self.rule = SizeRule(
            lambda size: tuple(n // scale for n in model.output_size(size)),
            model.legal_sizes,
            2 ** int(model.config.depth),
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        precision: str = "auto",
        checkpoint: Checkpoint | None = None,
        **tiling: Any,
    ) -> Restorer:
        """``tiling``: ``tile``, ``overlap``, ``blend``, ``batch_size`` (see the class)."""
        dev = resolve_device(device)
        model, ckpt = load_model(path, dev, checkpoint)
        if ckpt.task != "regression":
            raise UnetkitError(f"{path}: a {ckpt.task} model predicts masks, not images")
        return cls(model, ckpt, dev, resolve_precision(precision, dev), **tiling)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tiles ``(B, C, h, w)`` -> ``(B, out * s**2, h', w')`` at the input's resolution."""
        with autocast(self.device, self.precision):
            y = self.model(x.to(self.device)).float()
        scale = int(self.model.config.scale)
        return F.pixel_unshuffle(y, scale) if scale > 1 else y

    @torch.inference_mode()
    def restore(self, image: np.ndarray) -> np.ndarray:
        """The model's output image.

        Args:
            image: (H, W) or (H, W, C) uint8 / uint16 / float in [0, 1].

        Returns:
            (H * s, W * s, C) in the input's dtype (s: the model's pixel-shuffle scale).
        """
        pre = self.checkpoint.preprocessing
        x = image_to_tensor(image, pre)  # (C, H, W), normalised with the whole image's stats
        y = predict_tiled(
            self._forward,
            x,
            self.tile,
            self.overlap,
            self.rule,
            blend=self.blend,
            batch_size=self.batch_size,
        )  # (out * s**2, H, W) on the CPU
        scale = int(self.model.config.scale)
        y = F.pixel_shuffle(y[None], scale)[0] if scale > 1 else y  # (C, H * s, W * s)
        mean = torch.tensor(pre.mean).view(-1, 1, 1)
        std = torch.tensor(pre.std).view(-1, 1, 1)
        out = (y * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # (H', W', C) in [0, 1]
        dtype = np.asarray(image).dtype
        if np.issubdtype(dtype, np.integer):
            return np.rint(out * np.iinfo(dtype).max).astype(dtype)
        return out.astype(np.float32)


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
        target = out / f"{output_stem(path)}.png"
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
