"""verify: clean data gives no findings; each kind of problem is found, with its files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.verify import Finding, format_findings, verify
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
