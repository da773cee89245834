"""The objects of a prediction: from a whole image's probabilities to object ids and scores.

Instance models: a seeded watershed on the stitched probabilities (and, for the ``distance``
head, distance map), or the ``rays`` head's polygons, once per image, never per tile
(``unetkit.objects.postprocess.separate_objects``); the class mask agrees with the objects.
Semantic models: the 4-connected components of each class other than background
(``unetkit.objects.labels.connected_objects``), or with ``PredictConfig.objects_between`` the
regions that class separates (``unetkit.objects.postprocess.regions_between``). An object's
score is its mean object probability, ``1 - p(background)`` over its pixels (with
``objects_between``, ``1 - p(boundary class)``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..config import ObjectConfig, PredictConfig
from ..errors import UnetkitError


def between_class(name: str | None, classes: list[str], instance: bool) -> int | None:
    """The class index of ``PredictConfig.objects_between`` ``name`` (a class name or index)
    among a model's ``classes`` (None when not set).

    Raises:
        UnetkitError: not a class of this model, or an instance model (its objects come
            from its own boundary class).
    """
    if name is None:
        return None
    classes = list(classes)
    if instance:
        raise UnetkitError(
            f"--objects-between {name}: instance models separate objects with their own "
            "boundary class"
        )
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    raise UnetkitError(
        f"--objects-between {name}: not a class of this model ({', '.join(classes)})"
    )


def objectness(probs: np.ndarray) -> np.ndarray:
    """Each pixel's probability of belonging to an object, ``1 - p(background)`` (a single
    sigmoid channel: that channel), from ``(K, H, W)`` probabilities."""
    return probs[0] if probs.shape[0] == 1 else 1.0 - probs[0]


def scored_objects(
    probs: torch.Tensor,
    class_mask: Callable[[torch.Tensor], torch.Tensor],
    config: PredictConfig,
    instance: ObjectConfig | None,
    between: int | None,
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """Class mask, objects and each object's score of one image (module docstring).

    Args:
        probs: the whole image's probabilities ``(K, H, W)`` (``Predictor.predict_proba``
            before a one-channel sigmoid is widened to two).
        class_mask: probabilities -> the model's class mask, a tensor (``Predictor``'s).
        config: the prediction settings (``objects_between``'s post-processing overrides).
        instance: an instance model's post-processing; None for semantic models.
        between: the class index of ``objects_between`` (``between_class``), or None.
        ignore_index: the class that is no object of a semantic model.

    Returns:
        ((H, W) uint8 class mask, (H, W) int32 object ids, 0 = none, id -> score).
    """
    from ..objects.labels import connected_objects
    from ..objects.postprocess import (
        BETWEEN_DEFAULTS,
        object_scores,
        regions_between,
        separate_objects,
    )

    if instance is not None:
        array = probs.numpy()
        mask, ids = separate_objects(array, instance)
        return mask, ids, object_scores(ids, 1.0 - array[0])
    if between is not None:
        if probs.shape[0] == 1:  # one sigmoid channel: class 1, or its complement
            boundary = probs[0] if between == 1 else 1 - probs[0]
        else:
            boundary = probs[between]
        boundary_np = boundary.float().numpy()
        regions = regions_between(boundary_np, config.object_overrides(BETWEEN_DEFAULTS))
        return class_mask(probs).numpy(), regions, object_scores(regions, 1.0 - boundary_np)
    mask = class_mask(probs).numpy()
    ids = connected_objects(mask, ignore_index=ignore_index)
    return mask, ids, object_scores(ids, objectness(probs.float().numpy()))
