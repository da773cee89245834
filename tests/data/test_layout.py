"""How ``describe_dataset`` decides 0/255 binary masks and inferred classes: from every mask.

Guards (the mutation each one kills):

* ``test_empty_first_mask_does_not_hide_the_binary_mapping``: deciding 0/255 from the first
  mask only (an empty first mask turned every other foreground into the ignore index).
* ``test_a_class_seen_only_in_a_skipped_mask_is_inferred``: inferring the classes from a
  sample of the masks (the 200-mask sample missed a class: out-of-range targets).
* ``test_mixed_0_1_and_0_255_masks_are_an_error``: a silent guess on mixed conventions.
* ``test_255_is_ignore_where_a_mask_holds_both_1_and_255``: calling that mixture "mixed".
* ``test_two_line_classes_file_rejects_values_beyond_class_1``: out-of-range targets.
* ``test_mask_values_match_read_mask_in_every_mode``: a fast value pass that disagrees with
  ``read_mask`` (e.g. Pillow's 0/255 for 1-bit masks).
* ``test_map_binary_255``: the one 0/255 -> 0/1 mapping.
* ``test_images_and_instances_without_masks``: an ``images/`` + ``instances/`` folder refused,
  or its ids taken as classes (``read_mask`` reading the instance file as a class mask).
* ``test_read_mask_applies_the_binary_mapping``: callers mapping 0/255 themselves (or not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realdata import DSB, ISBI
from unetkit.config import DataConfig
from unetkit.data.dataset import SegmentationDataset
from unetkit.data.imageio import read_mask
from unetkit.data.layout import describe_dataset, find_layout, map_binary_255, mask_values
from unetkit.errors import UnetkitError


def _pair(root: Path, stem: str, mask: np.ndarray) -> None:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    image = (np.arange(mask.size) % 200 + 20).astype(np.uint8).reshape(mask.shape)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")


def _square(value: int, size: int = 6) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[1:4, 2:5] = value  # 9 foreground pixels
    return mask


@pytest.mark.parametrize("classes_file", [True, False])
def test_empty_first_mask_does_not_hide_the_binary_mapping(tmp_path, classes_file, caplog):
    root = tmp_path / "d"
    _pair(root, "a", np.zeros((6, 6), np.uint8))  # sorted first, all background
    _pair(root, "b", _square(255))
    if classes_file:
        (root / "classes.txt").write_text("background\nnucleus\n")
    with caplog.at_level(logging.INFO, logger="unetkit.data.layout"):
        info = describe_dataset(root)
    assert info.binary_255
    assert "masks are 0/255: mapped to classes 0/1 (2 masks checked)" in caplog.text
    ds = SegmentationDataset(info, stems=["b"], config=DataConfig(channels=1, resize="none"))
    mask = ds[0]["mask"].numpy()
    assert (mask == 1).sum() == 9 and (mask == 0).sum() == 27 and not (mask == 255).any()


def test_a_class_seen_only_in_a_skipped_mask_is_inferred(tmp_path, caplog):
    root = tmp_path / "d"
    for i in range(400):  # a sample of 200 would take every second mask: 0, 2, 4, ...
        _pair(root, f"{i:03d}", np.array([[0, 1], [1, 0]]) if i != 1 else np.array([[0, 3]]))
    with caplog.at_level(logging.INFO, logger="unetkit.data.layout"):
        info = describe_dataset(root)
    assert info.classes == ["background", "class1", "class2", "class3"] and not info.binary_255
    assert "classes inferred from 400 masks: values [0, 1, 3]" in caplog.text


@pytest.mark.parametrize("classes_file", [True, False])
def test_mixed_0_1_and_0_255_masks_are_an_error(tmp_path, classes_file):
    root = tmp_path / "d"
    _pair(root, "a", _square(1))
    _pair(root, "b", np.zeros((6, 6), np.uint8))
    _pair(root, "c", _square(255))
    if classes_file:
        (root / "classes.txt").write_text("background\nnucleus\n")
    with pytest.raises(UnetkitError, match=r"c\.png: a 0/255 mask, but a\.png is 0/1") as err:
        describe_dataset(root)
    assert "\n" not in str(err.value)


def test_255_is_ignore_where_a_mask_holds_both_1_and_255(tmp_path):
    root = tmp_path / "d"
    _pair(root, "a", np.array([[0, 1], [255, 1]]))  # 1 and 255 together: 255 is the ignore
    _pair(root, "b", np.array([[0, 255], [0, 0]]))
    info = describe_dataset(root)
    assert info.classes == ["background", "class1"] and not info.binary_255


def test_two_line_classes_file_rejects_values_beyond_class_1(tmp_path):
    root = tmp_path / "d"
    _pair(root, "a", _square(1))
    _pair(root, "b", _square(2))
    (root / "classes.txt").write_text("background\nnucleus\n")
    with pytest.raises(UnetkitError, match=r"b\.png: mask value\(s\) \[2\] outside the 2 classes"):
        describe_dataset(root)


def test_mask_values_match_read_mask_in_every_mode(tmp_path):
    values = np.array([[0, 1, 7], [255, 1, 0]], np.uint8)
    images = {
        "L": Image.fromarray(values),
        "P": Image.frombytes("P", (3, 2), values.tobytes()),
        "1": Image.fromarray(values > 0),  # read_mask gives 0/1, not Pillow's 0/255
        "I16": Image.fromarray(values.astype(np.uint16) * 200),
        "LA": Image.fromarray(np.dstack([values, np.full_like(values, 9)]), "LA"),
        "RGB": Image.fromarray(np.dstack([values] * 3)),
    }
    for mode, image in images.items():
        image.save(tmp_path / f"{mode}.png")
        expected = set(np.unique(read_mask(tmp_path / f"{mode}.png")).tolist())
        assert mask_values(tmp_path / f"{mode}.png") == expected, mode
    assert mask_values(tmp_path / "1.png") == {0, 1}
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(UnetkitError, match=r"bad\.png: cannot read mask"):
        mask_values(tmp_path / "bad.png")


def test_map_binary_255():
    mask = np.array([[0, 255], [255, 0]])
    assert map_binary_255(mask).tolist() == [[0, 1], [1, 0]]
    assert mask.tolist() == [[0, 255], [255, 0]]  # the input is not changed


@pytest.mark.slow
@pytest.mark.parametrize("root", [DSB, ISBI], ids=["dsb2018-dev", "isbi2012"])
def test_real_sets_are_0_1_after_checking_every_mask(root, caplog):
    if not (root / "masks").is_dir():
        pytest.skip(f"{root} not available")
    with caplog.at_level(logging.INFO, logger="unetkit.data.layout"):
        info = describe_dataset(root)
    assert info.classes == ["background", "class1"] and not info.binary_255
    n = len(info.stems)
    assert f"classes inferred from {n} masks: values [0, 1]" in caplog.text


def _instances(root: Path, stem: str, ids: np.ndarray) -> None:
    for sub in ("images", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    image = (np.arange(ids.size) % 200 + 20).astype(np.uint8).reshape(ids.shape)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(ids.astype(np.uint16)).save(root / "instances" / f"{stem}.png")


IDS = np.array([[0, 1, 1, 0], [2, 2, 0, 300], [0, 0, 0, 300]])


def test_images_and_instances_without_masks(tmp_path, caplog):
    root = tmp_path / "d"
    _instances(root, "a", IDS)
    _instances(root, "b", np.zeros((3, 4), np.uint16))
    assert find_layout(root) == ("images-instances", "")
    with caplog.at_level(logging.INFO, logger="unetkit.data.layout"):
        info = describe_dataset(root)
    assert "class mask = instances > 0" in caplog.text
    assert info.layout == "images-instances" and info.classes == ["background", "object"]
    assert info.stems == ["a", "b"] and info.masks_from_instances and not info.binary_255
    assert (
        info.mask_files
        == info.instance_files
        == {s: root / "instances" / f"{s}.png" for s in ("a", "b")}
    )
    mask = info.read_mask("a")
    assert mask.dtype == np.int64
    assert mask.tolist() == [[0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1]]
    np.testing.assert_array_equal(info.read_instances("a"), IDS)
    assert not info.read_mask("b").any()
    (root / "classes.txt").write_text("background\nnucleus\n")
    assert describe_dataset(root).classes == ["background", "nucleus"]
    (root / "classes.txt").write_text("background\nnucleus\ncell\n")
    with pytest.raises(UnetkitError, match=r"classes\.txt: 3 class names, but images/ \+ inst"):
        describe_dataset(root)


def test_masks_beside_instances_stay_the_class_masks(tmp_path):
    root = tmp_path / "d"
    _instances(root, "a", IDS)
    _pair(root, "a", (IDS > 0) * 2)  # masks/ present: the classes come from the masks
    info = describe_dataset(root)
    assert info.layout == "images-masks" and not info.masks_from_instances
    assert info.classes == ["background", "class1", "class2"]
    assert info.read_mask("a").tolist() == ((IDS > 0) * 2).tolist()
    assert info.instance_files == {"a": root / "instances" / "a.png"}
    with pytest.raises(UnetkitError, match="no instance labels for zz"):
        info.read_instances("zz")


def test_read_mask_applies_the_binary_mapping(tmp_path):
    root = tmp_path / "d"
    _pair(root, "a", _square(255))
    info = describe_dataset(root)
    assert info.binary_255
    assert (info.read_mask("a") == 1).sum() == 9 and info.read_mask("a").max() == 1
    assert info.read_mask("a", binary_255=False).max() == 255  # DataConfig(binary_255=False)
    with pytest.raises(UnetkitError, match="no mask for 'b'"):
        info.read_mask("b")
