"""bench/ helpers: the nested training subsets of the learning-curve benches (curve.py) and
the split of a mask's errors by kind (where_missing.py), the copy-paste composites
(copy_paste.py)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from curve import nested_subsets, spread_order, stratified_order  # noqa: E402
from where_missing import by_group, image_errors  # noqa: E402

# as the DSB 2018 dev training split: 70 images in eight imaging groups
GROUPS = {"fluo_256": 24, "color": 19, "fluo_360": 8, "fluo_696": 8, "bright": 5,
          "fluo_640": 3, "fluo_other": 2, "fluo_1272": 1}  # fmt: skip
GROUP_OF = {f"{g}_{i:02d}": g for g, n in GROUPS.items() for i in range(n)}


def test_subsets_are_nested_deterministic_and_stratified():
    stems = sorted(GROUP_OF)
    sizes = [8, 16, 32, 70]
    subsets = nested_subsets(stems, GROUP_OF, sizes)
    assert subsets == nested_subsets(list(reversed(stems)), GROUP_OF, sizes)  # order-free
    for small, large in zip(sizes, sizes[1:]):
        assert set(subsets[small]) < set(subsets[large])
    assert subsets[70] == stems
    for n in sizes:
        assert len(subsets[n]) == len(set(subsets[n])) == n
        counts = Counter(GROUP_OF[s] for s in subsets[n])
        for group, total in GROUPS.items():  # each group within one image of its share
            assert abs(counts[group] - n * total / 70) < 1, (n, group)
    assert Counter(GROUP_OF[s] for s in subsets[8]) == {
        "fluo_256": 3, "color": 2, "fluo_360": 1, "fluo_696": 1, "bright": 1}  # fmt: skip


def test_every_prefix_is_stratified_and_a_group_is_taken_spread_out():
    order = stratified_order(sorted(GROUP_OF), GROUP_OF)
    assert sorted(order) == sorted(GROUP_OF)
    for k in range(1, len(order) + 1):
        counts = Counter(GROUP_OF[s] for s in order[:k])
        assert all(abs(counts[g] - k * n / 70) < 1.5 for g, n in GROUPS.items()), k
    fluo = [s for s in order if GROUP_OF[s] == "fluo_256"][:3]
    assert fluo == ["fluo_256_12", "fluo_256_06", "fluo_256_18"]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 24, 30])
def test_spread_order_takes_each_item_once_prefixes_spread(n):
    order = spread_order(list(range(n)))
    assert sorted(order) == list(range(n))
    if n == 24:  # the ISBI training slices: 4 and 8 slices spread over the stack
        assert sorted(order[:4]) == [3, 6, 12, 18]
        assert sorted(order[:8]) == [1, 3, 6, 9, 12, 15, 18, 21]


def test_sizes_outside_the_split_are_refused():
    with pytest.raises(ValueError, match=r"train sizes must be in 1\.\.70; got \[71\]"):
        nested_subsets(sorted(GROUP_OF), GROUP_OF, [8, 71])


def test_where_missing_splits_the_errors_by_kind():
    instances = np.zeros((40, 60), np.uint16)
    instances[5:15, 5:15] = 1  # found, predicted 1 px too small: its rim is missing
    instances[5:15, 30:40] = 2  # missed whole
    instances[25:35, 5:15] = 3  # found, predicted 1 px too large, with a hole of 2x2 px
    pred = np.zeros((40, 60), bool)
    pred[6:14, 6:14] = True
    pred[24:36, 4:16] = True
    pred[29:31, 9:11] = False  # the hole: 3 px or more from object 3's edge
    pred[30:34, 50:54] = True  # a spurious blob
    image = np.where(instances > 0, 200, 20).astype(np.uint8)
    image[instances == 2] = 40  # the missed one is dim
    e = image_errors(pred, instances, image, rim=2)
    assert e["true_px"] == 300 and e["objects"] == 3 and e["missed"] == 1
    assert e["fn_rim"] == 100 - 64 and e["fn_inner"] == 4 and e["fn_missed"] == 100
    assert e["fp_rim"] == 144 - 100 and e["fp_other"] == 0 and e["fp_spurious"] == 16
    assert e["pred_px"] == 64 + 140 + 16
    assert e["contrast_missed"][0] < min(e["contrast_found"])
    groups = by_group([("a", e), ("b", e)], {"a": "x", "b": "y"})
    assert groups["all"]["fn_missed"] == 200 and groups["x"]["images"] == 1
    assert len(groups["all"]["contrast_found"]) == 4


def test_every_bench_script_imports_names_unetkit_has():
    """A refactor that moves a function breaks no bench script silently: every ``from
    unetkit... import NAME`` in bench/ (at any depth) names something that module has."""
    import ast
    import importlib

    missing = []
    for path in sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unetkit"):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if not hasattr(module, alias.name) and importlib.util.find_spec(name) is None:
                        missing.append(f"{path.name}: {name}")
    assert not missing


def test_copy_paste_pastes_touching_nuclei_behind_the_others():
    from copy_paste import composite

    instances = np.zeros((96, 96), np.int32)
    yy, xx = np.mgrid[:96, :96]
    for i, (cy, cx) in enumerate([(30, 30), (60, 62), (30, 70)], start=1):
        instances[(yy - cy) ** 2 + (xx - cx) ** 2 <= 8**2] = i
    image = np.where(instances[..., None] > 0, 200, 20).astype(np.uint8).repeat(3, -1)
    given = image.copy()
    out, labels = composite(image, instances, np.random.default_rng(0), fraction=2.0)
    new = np.unique(labels[labels > 3])
    assert len(new) >= 2  # copies were pasted, each with an id of its own
    assert np.array_equal(labels[instances > 0], instances[instances > 0])  # behind the others
    assert (out[labels > 3] == 200).all() and (out[labels == 0] == 20).all()
    grown = ndimage.binary_dilation(instances > 0, iterations=2)
    for i in new:  # each copy touches (or all but touches) a nucleus that was there
        assert (grown & (labels == i)).any(), i
    assert np.array_equal(image, given)  # the input is not modified
