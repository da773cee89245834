"""verify: clean data gives no findings; each kind of problem is found, with its files;
instance folders are checked against images and masks, and their objects counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.findings import Finding
from unetkit.data.verify import check_dataset, format_findings, verify
from unetkit.errors import UnetkitError

MASK = np.zeros((8, 10), np.uint8)
MASK[2:6, 3:8] = 1


def _folder(tmp_path: Path, classes: list[str] | None = ("background", "fg")) -> Path:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((8, 10), 90, np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(MASK).save(root / "masks" / f"{stem}.png")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_clean_data_has_no_findings(tmp_path, prepared_dataset, capsys):
    assert verify(_folder(tmp_path)) == []
    assert verify(prepared_dataset) == []
    assert main(["verify", str(prepared_dataset)]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


def test_missing_pairs(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "a.png").unlink()
    Image.fromarray(MASK).save(root / "masks" / "z.png")
    findings = verify(root)
    assert Finding("error", ["a.png"], "image without a mask") in findings
    assert Finding("error", ["z.png"], "mask without an image") in findings


def test_size_mismatch(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(root / "images" / "b.png")
    f = _only(verify(root))
    assert f.level == "error" and f.files == ["b.png", "b.png"]
    assert f.message == "size mismatch: image 9x10, mask 8x10 (HxW)"


def test_values_outside_class_list(tmp_path):
    root = _folder(tmp_path)
    bad = MASK.copy()
    bad[0, 0] = 3
    Image.fromarray(bad).save(root / "masks" / "a.png")
    f = _only(verify(root))
    assert f.files == ["a.png"] and f.message.startswith("values [3] outside the class list 0..1")


def test_zero_255_masks_suggest_binary_mapping(tmp_path):
    root = _folder(tmp_path, classes=None)
    for stem in ("a", "b"):
        Image.fromarray(MASK * 255).save(root / "masks" / f"{stem}.png")
    f = _only(verify(root))
    assert f.level == "warning" and f.files == ["a.png", "b.png"] and "binary mapping" in f.message


def test_jpeg_masks(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "b.png").unlink()
    Image.fromarray(MASK).save(root / "masks" / "b.jpg", quality=95)
    findings = verify(root)
    assert any(f.files == ["b.jpg"] and "lossy JPEG mask" in f.message for f in findings)


def test_antialiased_edges(tmp_path):
    root = _folder(tmp_path, classes=None)
    soft = MASK.astype(np.int32) * 255
    soft[1, 3:8], soft[6, 3:8] = 128, 128  # a resized mask: grey rows between 0 and 255
    soft[2:6, 2], soft[2:6, 8] = 100, 100
    Image.fromarray(soft.astype(np.uint8)).save(root / "masks" / "a.png")
    f = _only(verify(root))
    assert f.level == "error" and f.files == ["a.png"]
    assert f.message.startswith("anti-aliased edges: values [100, 128]")


def test_rgb_colour_masks(tmp_path):
    root = _folder(tmp_path)
    colour = np.zeros((8, 10, 3), np.uint8)
    colour[MASK == 1] = [128, 0, 0]
    Image.fromarray(colour).save(root / "masks" / "a.png")
    f = _only(verify(root))
    assert f.level == "error" and f.files == ["a.png"] and "RGB colour mask" in f.message


def test_all_background(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(root / "masks" / "b.png")
    assert _only(verify(root)) == Finding("warning", ["b.png"], "mask is all background")


def test_channel_mix_and_non_finite(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.full((8, 10, 3), 90, np.uint8)).save(root / "images" / "b.png")
    f = _only(verify(root))
    assert f.level == "warning" and f.files == ["a.png"]
    assert f.message.startswith("channel counts differ: 1 with 1, 1 with 3")
    (root / "images" / "b.png").unlink()
    stack = np.zeros((8, 10, 4), np.float32)
    stack[0, 0, 2] = np.nan
    np.save(root / "images" / "b.npy", stack)
    findings = verify(root)
    assert Finding("error", ["b.npy"], "1 NaN/infinite pixel values") in findings
    assert any(f.level == "error" and "channel counts differ" in f.message for f in findings)


def test_unreadable_and_inconsistent_class_lists(tmp_path, prepared_dataset):
    root = _folder(tmp_path)
    (root / "images" / "a.png").write_bytes(b"broken")
    f = _only(verify(root))
    assert f.level == "error" and f.files == ["a.png"] and "cannot read image" in f.message
    copy = tmp_path / "prep"
    shutil.copytree(prepared_dataset, copy)
    (copy / "classes.txt").write_text("background\ncell\n")
    f = _only(verify(copy))
    assert f.files == ["classes.txt", "dataset.json"] and f.message.startswith("class lists")


def test_report_and_exit_code(tmp_path, capsys):
    root = _folder(tmp_path)
    (root / "masks" / "a.png").unlink()
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(root / "masks" / "b.png")
    text = format_findings(verify(root), root)
    assert text.splitlines() == [
        "error: a.png: image without a mask",
        "warning: b.png: mask is all background",
        f"1 error(s), 1 warning(s) in {root}",
    ]
    assert main(["verify", str(root)]) == 2
    assert "1 error(s), 1 warning(s)" in capsys.readouterr().out
    # a folder without images/ + masks/ is a usage error, not a finding
    with pytest.raises(UnetkitError, match="unrecognised dataset layout"):
        verify(tmp_path)


IDS = np.zeros((8, 10), np.uint16)
IDS[2:6, 3:5], IDS[2:6, 5:8] = 1, 2  # MASK's region as two touching objects


def _instances(root: Path, stem: str = "a", ids: np.ndarray = IDS) -> None:
    (root / "instances").mkdir(exist_ok=True)
    Image.fromarray(ids.astype(np.uint16)).save(root / "instances" / f"{stem}.png")


def _with_instances(tmp_path: Path, classes=("background", "fg")) -> Path:
    root = _folder(tmp_path, classes)
    for stem in ("a", "b"):
        _instances(root, stem)
    return root


def test_clean_instances_are_counted(tmp_path, prepared_dataset):
    report = check_dataset(_with_instances(tmp_path))
    assert report.findings == [] and report.n_instance_images == 2 and report.n_objects == 4
    assert format_findings(report.findings, "d", report).splitlines() == [
        "4 object(s) in 2 instance image(s)",
        "0 error(s), 0 warning(s) in d",
    ]
    prepared = check_dataset(prepared_dataset)
    assert prepared.findings == [] and prepared.n_instance_images == 6
    meta = json.loads((prepared_dataset / "dataset.json").read_text())
    assert prepared.n_objects == meta["n_objects"]


def test_instance_size_mismatch(tmp_path):
    root = _with_instances(tmp_path)
    _instances(root, "b", np.zeros((9, 10), np.uint16))
    f = _only(verify(root))
    assert f.level == "error" and f.files == ["b.png", "b.png"]
    assert f.message == "size mismatch: image 8x10, instances 9x10 (HxW)"
    assert check_dataset(root).n_instance_images == 1  # the mis-sized one is not counted


def test_object_on_background_and_ignore_pixels(tmp_path):
    root = _with_instances(tmp_path)
    ids = IDS.copy()
    ids[1, 5:7] = 2  # two background pixels above object 2
    _instances(root, "a", ids)
    mask = MASK.copy()
    mask[5, 3] = 255  # an ignore pixel under object 1 (255 is the ignore index beside 0/1)
    Image.fromarray(mask).save(root / "masks" / "b.png")
    findings = verify(root)
    assert Finding(
        "error", ["a.png", "a.png"],
        "2 object pixel(s) on background or ignore pixels of the mask (1 object(s): id 2)",
    ) in findings  # fmt: skip
    assert Finding(
        "error", ["b.png", "b.png"],
        "1 object pixel(s) on background or ignore pixels of the mask (1 object(s): id 1)",
    ) in findings  # fmt: skip
    assert len(findings) == 2


def test_object_spanning_two_classes(tmp_path):
    root = _with_instances(tmp_path, classes=("background", "fg", "other"))
    mask = MASK.copy()
    mask[2:6, 4] = 2  # column 4 of object 1 is of class 2, the rest of class 1
    Image.fromarray(mask).save(root / "masks" / "a.png")
    f = _only(verify(root))
    assert f == Finding(
        "error", ["a.png", "a.png"], "1 object(s) span several classes of the mask: id 1"
    )


def test_foreground_without_object_and_binary_255_masks(tmp_path):
    root = _with_instances(tmp_path, classes=None)
    ids = IDS.copy()
    ids[2:6, 7] = 0  # the last foreground column belongs to no object
    _instances(root, "a", ids)
    for stem in ("a", "b"):  # 0/255 masks: 255 is the foreground, not ignore
        Image.fromarray(MASK * 255).save(root / "masks" / f"{stem}.png")
    findings = verify(root)
    assert (
        Finding("warning", ["a.png", "a.png"], "4 foreground mask pixel(s) belong to no object")
        in findings
    )
    assert [f.message for f in findings if f.level == "error"] == []


def test_missing_orphan_and_unreadable_instance_files(tmp_path):
    root = _with_instances(tmp_path)
    (root / "instances" / "b.png").unlink()
    _instances(root, "z")
    findings = verify(root)
    assert Finding(
        "error", ["b.png"], "image without an instance file (1 of 2 images have one in instances/)"
    ) in findings  # fmt: skip
    assert Finding("error", ["z.png"], "instance file without an image") in findings
    assert len(findings) == 2
    (root / "instances" / "a.png").write_bytes(b"broken")
    f = next(f for f in verify(root) if f.files == ["a.png"])
    assert f.level == "error" and "cannot read" in f.message
    negative = np.zeros((8, 10), np.int32)
    negative[0, 0] = -3
    (root / "instances" / "a.png").unlink()
    Image.fromarray(negative).save(root / "instances" / "a.tif")
    f = next(f for f in verify(root) if f.files == ["a.tif"])
    assert f.message == "instance ids must be >= 0; found -3"


def _instances_only(tmp_path: Path) -> Path:
    root = _with_instances(tmp_path, classes=None)
    shutil.rmtree(root / "masks")
    return root


def test_images_and_instances_without_masks(tmp_path):
    root = _instances_only(tmp_path)
    report = check_dataset(root)
    assert report.findings == [] and report.n_objects == 4 and report.n_pairs == 2
    Image.fromarray(np.zeros((8, 11), np.uint8)).save(root / "images" / "b.png")
    Image.fromarray(MASK).save(root / "images" / "c.png")
    _instances(root, "z", np.zeros((8, 10), np.uint16))
    (root / "classes.txt").write_text("background\nfg\nother\n")
    findings = verify(root)
    assert (
        Finding("error", ["b.png", "b.png"], "size mismatch: image 8x11, instances 8x10 (HxW)")
        in findings
    )
    assert Finding("error", ["c.png"], "image without an instance file") in findings
    assert Finding("error", ["z.png"], "instance file without an image") in findings
    assert any(
        f.files == ["classes.txt"] and f.message.startswith("3 class names") for f in findings
    )
    assert len(findings) == 4


def test_findings_list_five_names_then_count_the_rest():
    from unetkit.data.findings import listed

    assert listed([str(i) for i in range(7)]) == "0, 1, 2, 3, 4 (+2 more)"
    assert listed(["a.png", "b.png"]) == "a.png, b.png"
    assert listed([]) == ""
