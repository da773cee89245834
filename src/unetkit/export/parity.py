"""The parity check of an export: the exported file against the PyTorch model on random inputs.

Before an exported file is renamed into place it runs on random inputs of two sizes (a small
legal one, not square, and the training size), beside the PyTorch model it came from; a
logit that differs by more than ``MAX_LOGIT_DIFF`` or an argmax agreement below
``MIN_AGREEMENT`` fails the export, and a failed check leaves no file behind.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..errors import UnetkitError

if TYPE_CHECKING:
    from ..models.unet import UNet

log = logging.getLogger(__name__)

MAX_LOGIT_DIFF = 1e-4
MIN_AGREEMENT = 0.9999


def sample_sizes(model: UNet, ckpt: Checkpoint) -> list[tuple[int, int]]:
    """A small legal input size (not square, to catch swapped axes) and the training size."""
    small = tuple(model.legal_sizes(n)[1] for n in (37, 45))
    real = tuple(model.legal_sizes(int(n))[1] for n in ckpt.preprocessing.size_or())
    if None in small or None in real:
        raise UnetkitError("no legal input size near the training size for the parity check")
    return [small, real]  # type: ignore[list-item]


def runner(fmt: str, path: Path):
    """The exported file as a function ``np.ndarray (B, C, H, W) -> np.ndarray logits``."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def _compare(reference: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """``(max |difference|, agreement of argmax or of the sign for one channel)``."""
    if reference.shape != exported.shape:
        return float("inf"), 0.0
    diff = float(np.abs(reference - exported).max())
    if reference.shape[1] == 1:
        agree = np.mean((reference > 0) == (exported > 0))
    else:
        agree = np.mean(reference.argmax(1) == exported.argmax(1))
    return diff, float(agree)


def check_parity(
    model: UNet,
    run,
    sizes: list[tuple[int, int]],
    source: str | os.PathLike,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run the exported model and the PyTorch model on random inputs and compare.

    Args:
        model: the PyTorch model in eval mode (fp32, CPU).
        run: ``np.ndarray (B, C, H, W) float32 -> np.ndarray (B, K, H', W')``.
        sizes: input ``(H, W)`` sizes to try (batch of 2 for the first, 1 for the others).
        source: the exported file, for messages.
        seed: random seed of the inputs.

    Returns:
        Per size: ``{"size", "max_abs_diff", "agreement"}``.

    Raises:
        UnetkitError: max |logit difference| > 1e-4 or argmax agreement < 99.99 %, saying by how
            much.
    """
    gen = torch.Generator().manual_seed(seed)
    results = []
    for i, (h, w) in enumerate(sizes):
        x = torch.rand(2 if i == 0 else 1, model.config.in_channels, h, w, generator=gen)
        with torch.inference_mode():
            reference = model(x).float().numpy()
        diff, agree = _compare(reference, np.asarray(run(x.numpy()), dtype=np.float32))
        results.append({"size": [h, w], "max_abs_diff": diff, "agreement": agree})
        if diff > MAX_LOGIT_DIFF or agree < MIN_AGREEMENT:
            raise UnetkitError(
                f"{source}: parity check failed at input {h}x{w}: max |logit difference| "
                f"{diff:.3g} (limit {MAX_LOGIT_DIFF:g}), argmax agreement {100 * agree:.4f} % "
                f"(limit {100 * MIN_AGREEMENT:.2f} %)"
            )
        # debug only: the caller reports the results (the CLI prints each size once)
        log.debug("parity %dx%d: max |diff| %.2e, agreement %.4f %%", h, w, diff, 100 * agree)
    return results
