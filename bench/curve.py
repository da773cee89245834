"""Learning curves for the benches (``dsb.py`` / ``isbi.py --train-sizes``): nested training
subsets stratified by group, the mean over seeds, and the plot of a score against the number
of annotated images (``unetkit.plots.plot_learning_curve``) with the no-learning baseline
as a line.

The subsets are nested (the 8 images are among the 16, the 16 among the 32, ...) and fixed:
they depend on the stems and their groups only, never on a seed, so the seeds of a size
differ in training alone (initialisation, crops, augmentation) and a step from one size to
the next adds images without swapping any.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def spread_order(items: Sequence[T]) -> list[T]:
    """``items`` in an order whose every prefix is spread evenly over the sequence: position
    ``int(f * n)`` for f in the van der Corput sequence 1/2, 1/4, 3/4, 1/8, 5/8, ... (each
    position once; for 24 consecutive EM slices 12, 6, 18, 3, 15, 9, 21, 1, ...). Neighbouring
    slices, or images taken one after another, are alike; spread ones less so."""
    n = len(items)
    order: list[int] = []
    seen: set[int] = set()
    i = 1
    while len(order) < n:
        f, denom, k = 0.0, 1.0, i
        while k:  # the bits of i, mirrored behind the binary point
            denom *= 2
            f += (k & 1) / denom
            k >>= 1
        pos = int(f * n)
        if pos not in seen:
            seen.add(pos)
            order.append(pos)
        i += 1
    return [items[p] for p in order]


def stratified_order(stems: Sequence[str], group_of: dict[str, str]) -> list[str]:
    """Every stem once, ordered so that each prefix takes the groups in proportion to their
    size: step ``k`` takes from the group furthest below its share ``k * n_g / N`` (ties: the
    larger group, then the name); within a group in :func:`spread_order` of the sorted stems.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for stem in sorted(stems):
        groups[group_of[stem]].append(stem)
    queues = {g: spread_order(members) for g, members in groups.items()}
    total, taken = len(stems), dict.fromkeys(groups, 0)
    order = []
    for k in range(1, total + 1):
        open_groups = [g for g in groups if taken[g] < len(groups[g])]
        pick = max(
            open_groups,
            key=lambda g: (k * len(groups[g]) / total - taken[g], len(groups[g]), g),
        )
        order.append(queues[pick][taken[pick]])
        taken[pick] += 1
    return order


def nested_subsets(
    stems: Sequence[str], group_of: dict[str, str], sizes: Sequence[int]
) -> dict[int, list[str]]:
    """Size -> the sorted stems of the first ``size`` of :func:`stratified_order` (nested).

    Raises:
        ValueError: a size below 1 or above the number of stems.
    """
    bad = [n for n in sizes if not 1 <= n <= len(stems)]
    if bad:
        raise ValueError(f"train sizes must be in 1..{len(stems)}; got {bad}")
    order = stratified_order(stems, group_of)
    return {n: sorted(order[:n]) for n in sizes}


def parse_sizes(text: str) -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32] (sorted, no repeats)."""
    return sorted({int(part) for part in text.split(",") if part.strip()})


def composition(subset: Sequence[str], group_of: dict[str, str]) -> str:
    """``fluo_256x256 3, color_320x256 2, ...``: images per group, largest first."""
    counts: dict[str, int] = defaultdict(int)
    for stem in subset:
        counts[group_of[stem]] += 1
    return ", ".join(f"{g} {n}" for g, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """The runs of one size, as ``0.812 0.830 0.825`` (empty for one run)."""
    return " ".join(f"{v:.3f}" for v in values) if len(values) > 1 else ""
