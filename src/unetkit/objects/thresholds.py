"""The rays head's ``prob_thresh``, ``nms_thresh`` and ``min_score`` chosen on validation images.

StarDist's ``optimize_thresholds`` does this after training; here the choice is a grid
(``PROB_GRID`` x ``NMS_GRID`` x ``SCORE_GRID``) scored by the DSB 2018 mean AP over IoU
0.50:0.95 (per-image mean, ``ObjectTally``), the post-processing otherwise as configured.
Each image's candidates are ranked and suppressed once per ``nms_thresh`` at the lowest
``prob_thresh``: greedy suppression decides each candidate from those ranked above it only,
so the polygons kept above a higher threshold are those same ones
(``unetkit.objects.stars.suppress``). The grid reaches well below StarDist's 0.5 because a
briefly trained model predicts an object probability under its target, and ``min_score`` 0
is among the choices because such a model's foreground probability on its objects falls
under the 0.8 that suits the boundary and distance heads.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..config import ObjectConfig
from .metrics import ObjectTally
from .postprocess import class_channels, finish_objects, fit_to_objects

PROB_GRID = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
NMS_GRID = (0.3, 0.4, 0.5)
SCORE_GRID = (0.0, 0.8)  # min_score


def choose_star_thresholds(
    samples: Iterable[tuple[np.ndarray, np.ndarray]], config: ObjectConfig
) -> tuple[ObjectConfig, dict[tuple[float, float, float], dict]]:
    """The ``prob_thresh``, ``nms_thresh`` and ``min_score`` of the grid that score best on
    ``samples``.

    Args:
        samples: (probabilities (K + 1 + R, H, W) of a rays-head model, true ids (H, W)),
            one image at a time (each is used once, so a generator keeps one in memory).
        config: the model's post-processing (a ``rays`` head).

    Returns:
        (``config`` with the best thresholds (ties: those nearest the configured ones),
        {(prob_thresh, nms_thresh, min_score): ``ObjectTally.summary()``}).
    """
    from .stars import draw, star_candidates, suppress

    grid = [(p, n, m) for p in PROB_GRID for n in NMS_GRID for m in SCORE_GRID]
    tallies = {key: ObjectTally() for key in grid}
    scored = {m: config.replace(min_score=m) for m in SCORE_GRID}
    for probs, truth in samples:
        probs = np.asarray(probs, np.float32)
        k = class_channels(probs, config)
        objects = (1.0 - probs[0]) > config.fg_threshold
        where = objects if config.rays_to_foreground else None
        candidates = star_candidates(probs[k], probs[k + 1 :], min(PROB_GRID), where)
        for n in NMS_GRID:
            kept = suppress(candidates, n)
            for p in PROB_GRID:
                labels = fit_to_objects(draw(candidates, kept & (candidates.score > p)),
                                        objects, config)  # fmt: skip
                for m, cfg in scored.items():
                    tallies[(p, n, m)].add(finish_objects(labels, probs, k, cfg)[1], truth)
    table = {key: tally.summary() for key, tally in tallies.items()}

    def rank(key: tuple[float, float, float]) -> tuple[float, float]:
        near = sum(abs(a - b) for a, b in zip(key, configured, strict=True))
        return (round(table[key].get("map") or 0.0, 6), -near)

    configured = (config.prob_thresh, config.nms_thresh, config.min_score)
    p, n, m = max(table, key=rank)
    return config.replace(prob_thresh=p, nms_thresh=n, min_score=m), table
