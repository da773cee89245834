"""The U-Net paper's pixel-wise weight map (Ronneberger et al. 2015, eq. 2).

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``: class balancing plus a border
term that is large on background pixels squeezed between two objects, so that touching objects
are learnt apart. Computed once per mask (the dataset caches it).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..data.targets import two_nearest_distances
from ..errors import UnetkitError

# Border-term values below this are dropped: it bounds the window searched around each object.
_BORDER_TOLERANCE = 1e-6


def _class_term(
    mask: np.ndarray, valid: np.ndarray, class_weights: np.ndarray | str | None
) -> np.ndarray:
    """w_c(x) per pixel (float64 (H, W)); ``balanced`` makes the mean over valid pixels 1."""
    if class_weights is None:
        return np.ones(mask.shape)
    values = mask[valid].astype(np.int64)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise UnetkitError(
                f"weight map: class_weights must be 'balanced', None or an array; "
                f"got {class_weights!r}"
            )
        counts = np.bincount(values) if values.size else np.zeros(1, np.int64)
        table = np.zeros(counts.size)
        present = counts > 0
        # w_c = N / (K_present * n_c): each present class then holds 1 / K_present of the weight.
        table[present] = values.size / (present.sum() * counts[present])
    else:
        table = np.asarray(class_weights, dtype=np.float64).reshape(-1)
        if values.size and values.max() >= table.size:
            raise UnetkitError(
                f"weight map: class_weights has {table.size} values but the mask has "
                f"class {values.max()}"
            )
    out = np.zeros(mask.shape)
    out[valid] = table[values]
    return out


def _label_objects(
    mask: np.ndarray, valid: np.ndarray, objects: str | int
) -> tuple[np.ndarray, int]:
    """Connected components (4-connectivity) of the object class(es), numbered 1..n."""
    if objects == "foreground":
        classes = [c for c in np.unique(mask[valid]) if c != 0]
    elif isinstance(objects, (int, np.integer)) and not isinstance(objects, bool):
        classes = [objects]
    else:
        raise UnetkitError(
            f"weight map: objects must be 'foreground' or a class index; got {objects!r}"
        )
    labels = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for value in classes:  # per class, so touching objects of different classes stay apart
        lab, n = ndimage.label(valid & (mask == value))
        labels[lab > 0] = lab[lab > 0] + count
        count += n
    return labels, count


def border_weight_map(
    mask: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    objects: str | int = "foreground",
    class_weights: np.ndarray | None | str = "balanced",
    ignore_index: int = 255,
) -> np.ndarray:
    """The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, where d1, d2 are the
    Euclidean distances from x to the nearest pixel of the nearest and second-nearest object.
    The border term is added on non-object pixels only (the gaps between objects), and only
    when there are at least 2 objects; values below 1e-6 are dropped (that bounds the search).

    Args:
        mask: int class map (H, W).
        w0: border weight (paper: 10); 0 disables the border term.
        sigma: border width in pixels (paper: ~5).
        objects: ``"foreground"`` = connected components of every class != 0 (labelled per
            class), or one class index whose components are the objects (ISBI 2012: ``0``,
            the cells, separated by membrane class 1). 4-connectivity, so objects touching
            only diagonally across a 1-pixel line stay separate.
        class_weights: ``"balanced"`` = inverse class frequency in this mask, scaled so the
            mean over non-ignored pixels is 1; an array indexed by class value; None = 1.
        ignore_index: mask value that gets weight 0 and is neither object nor gap.

    Returns:
        float32 (H, W) weights, 0 on ignored pixels.

    Raises:
        UnetkitError: a mask that is not 2-D, sigma <= 0, w0 < 0, or bad objects/class_weights.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UnetkitError(f"weight map: mask must be (H, W); got shape {mask.shape}")
    if sigma <= 0 or w0 < 0:
        raise UnetkitError(f"weight map: need sigma > 0 and w0 >= 0; got {sigma=}, {w0=}")
    valid = mask != ignore_index
    weights = _class_term(mask, valid, class_weights)
    labels, count = _label_objects(mask, valid, objects)
    if count >= 2 and w0 > 0:
        # w0 exp(-r^2 / 2 sigma^2) < tolerance  <=>  r > sigma sqrt(2 ln(w0 / tolerance))
        reach = sigma * math.sqrt(2 * math.log(max(w0 / _BORDER_TOLERANCE, 1.0)))
        d1, d2 = two_nearest_distances(labels, count, reach)
        gaps = valid & (labels == 0)
        total = d1[gaps] + d2[gaps]
        weights[gaps] += w0 * np.exp(-(total**2) / (2 * sigma**2))
    weights[~valid] = 0.0
    return weights.astype(np.float32)
