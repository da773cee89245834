"""prepare: labelme folder -> dataset folder; round trip, determinism, all-or-nothing errors,
instance label images (labelme's object rule) beside the masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.config import DataConfig
from unetkit.data.dataset import SegmentationDataset
from unetkit.data.imageio import read_image, read_mask
from unetkit.data.instances import read_instances
from unetkit.data.labelme import load_image, load_labelme
from unetkit.data.layout import describe_dataset
from unetkit.data.prepare import prepare, roi_box
from unetkit.data.rasterize import rasterize
from unetkit.data.verify import verify
from unetkit.errors import UnetkitError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_round_trip(labelme_folder, prepared_dataset):
    root = prepared_dataset
    assert (root / "classes.txt").read_text() == "background\ncell\nnucleus\n"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["classes"] == ["background", "cell", "nucleus"]
    assert meta["ignore_index"] == 255 and meta["n_images"] == 6 and meta["channels"] == 3
    assert meta["palette"] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    stems = sorted(meta["split"]["train"] + meta["split"]["val"])
    assert stems == [f"img_{i:03d}" for i in range(6)]
    assert len(meta["split"]["val"]) == 2  # round(0.34 * 6)
    assert abs(sum(meta["class_share"]) - 1) < 1e-5 and min(meta["class_share"]) > 0.02
    for stem in ("img_000", "img_001"):  # imageData and imagePath sources
        doc = load_labelme(labelme_folder / f"{stem}.json")
        image = load_image(doc, labelme_folder)
        expected = rasterize(doc.shapes, image.shape[:2], {"cell": 1, "nucleus": 2})
        np.testing.assert_array_equal(read_mask(root / "masks" / f"{stem}.png"), expected)
        np.testing.assert_array_equal(read_image(root / "images" / f"{stem}.png"), image)
        assert Image.open(root / "masks" / f"{stem}.png").mode == "P"
        overlay = read_image(root / "overlays" / f"{stem}.png")
        assert overlay.shape[0] == 64 and overlay.shape[1] > 80  # with a legend strip
    info = describe_dataset(root)
    assert info.layout == "unetkit" and info.split == meta["split"]
    item = SegmentationDataset(info, config=DataConfig(channels=3, resize="none"))[0]
    assert item["image"].shape == (3, 64, 80) and set(item["mask"].unique().tolist()) <= {0, 1, 2}


def test_deterministic(labelme_folder, prepared_dataset, tmp_path):
    again = prepare(labelme_folder, tmp_path / "again", val_fraction=0.34, seed=0)
    assert again.n_images == 6
    assert _files(prepared_dataset) == _files(tmp_path / "again")


def test_explicit_labels_ignore_and_unknown(labelme_folder, tmp_path):
    report = prepare(labelme_folder, tmp_path / "a", labels=labelme_folder / "labels.txt")
    assert report.classes == ["_background_", "cell", "nucleus"]
    src = tmp_path / "src"
    shutil.copytree(labelme_folder, src)
    for i, label in ((1, "__ignore__"), (2, "dust"), (4, "dust"), (5, "fog")):
        doc = json.loads((src / f"img_{i:03d}.json").read_text())
        doc["shapes"][0]["label"] = label
        (src / f"img_{i:03d}.json").write_text(json.dumps(doc))
    with pytest.raises(UnetkitError) as info:
        prepare(src, tmp_path / "b", labels="cell,nucleus")
    message = str(info.value)
    assert "2 problem(s)" in message and "nothing was written" in message
    assert "unknown label 'dust' in img_002.json, img_004.json" in message
    assert "unknown label 'fog' in img_005.json" in message
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b")]  # no temp folder left
    report = prepare(src, tmp_path / "c", labels="cell,nucleus,dust,fog")
    assert report.classes == ["background", "cell", "nucleus", "dust", "fog"]
    mask = read_mask(tmp_path / "c" / "masks" / "img_001.png")
    assert (mask == 255).sum() > 0  # __ignore__ region
    share = json.loads((tmp_path / "c" / "dataset.json").read_text())["class_share"]
    assert len(share) == 5


def test_errors_collected_over_the_folder(labelme_folder, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(labelme_folder, src)
    (src / "img_001.png").unlink()
    doc = json.loads((src / "img_002.json").read_text())
    doc["shapes"][1]["points"] = doc["shapes"][1]["points"][:2]
    doc["shapes"][1]["shape_type"] = "polygon"
    (src / "img_002.json").write_text(json.dumps(doc))
    doc = json.loads((src / "img_004.json").read_text())
    doc["imageWidth"] = 81
    (src / "img_004.json").write_text(json.dumps(doc))
    assert main(["prepare", str(src), str(tmp_path / "out")]) == 2
    with pytest.raises(UnetkitError) as info:
        prepare(src, tmp_path / "out")
    message = str(info.value)
    assert message.startswith("3 problem(s)")
    assert "img_001.json: image 'img_001.png' not found" in message
    assert "img_002.json: shape 1: polygon needs at least 3 points, got 2" in message
    assert "img_004.json: imageHeight x imageWidth is 64x81" in message
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(labelme_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UnetkitError, match="exists and is not empty"):
        prepare(labelme_folder, out)
    prepare(labelme_folder, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()


def test_roi_crop(tmp_path):
    image = np.zeros((40, 50, 3), np.uint8)
    image[10:20, 5:30] = 255  # bright 10x25 plate (contour area 24 * 9 = 216)
    image[30:33, 40:43] = 255  # small speck, below the area range
    assert roi_box(image, 200, 100, 1000) == (10, 5, 20, 30)
    assert roi_box(image, 200, 100, 1000, margin=3) == (7, 2, 23, 33)
    assert roi_box(image, 200, 5000, 9000) is None


def _plate_folder(src: Path) -> Path:
    """One labelme file over a dark 30x40 image with a bright 10x20 plate (rows 5-14, cols
    10-29) and a rectangle shape on it."""
    src.mkdir()
    image = np.zeros((30, 40, 3), np.uint8)
    image[5:15, 10:30] = 230
    Image.fromarray(image).save(src / "a.png")
    doc = {
        "shapes": [{"label": "plate", "shape_type": "rectangle", "points": [[12, 6], [20, 10]]}],
        "imagePath": "a.png",
        "imageHeight": 30,
        "imageWidth": 40,
    }
    (src / "a.json").write_text(json.dumps(doc))
    return src


def test_roi_crop_in_prepare(tmp_path):
    src = _plate_folder(tmp_path / "lm")
    report = prepare(src, tmp_path / "out", crop_roi=(200, 50, 1000), val_fraction=0)
    assert report.split == {"train": ["a"], "val": []}
    mask = read_mask(tmp_path / "out" / "masks" / "a.png")
    assert mask.shape == (10, 20)  # the bright plate's bounding box
    np.testing.assert_array_equal(np.argwhere(mask == 1)[[0, -1]], [[1, 2], [5, 10]])
    assert (read_image(tmp_path / "out" / "images" / "a.png") == 230).all()


def test_cli_crop_roi_with_a_margin(tmp_path, capsys):
    """Bug: --crop-roi T,MIN,MAX,MARGIN parsed the margin as a float, so the crop box was
    floats and slicing the image crashed (an internal error) whenever an ROI was found."""
    from unetkit.cli import main

    src = _plate_folder(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", str(src), str(out), "--crop-roi", "200,50,1000,2"]) == 0
    assert read_mask(out / "masks" / "a.png").shape == (14, 24)  # the box + 2 px each side
    assert main(["prepare", str(src), str(tmp_path / "o2"), "--crop-roi", "200,50,1000,2.5"]) == 2
    assert "MARGIN whole pixels" in capsys.readouterr().err


def _scene(src, shapes: list[dict], size=(10, 12)) -> None:
    """One labelme file ``scene.json`` over a grey ``scene.png`` of ``size``."""
    src.mkdir()
    Image.fromarray(np.full(size, 120, np.uint8)).save(src / "scene.png")
    doc = {"shapes": shapes, "imagePath": "scene.png", "imageHeight": size[0],
           "imageWidth": size[1]}  # fmt: skip
    (src / "scene.json").write_text(json.dumps(doc))


def _rect(label, x1, y1, x2, y2, group_id=None) -> dict:
    points = [[x1, y1], [x2, y2]]
    return {"label": label, "shape_type": "rectangle", "points": points, "group_id": group_id}


SCENE = [
    _rect("cell", 0, 0, 3, 3),  # object 1
    _rect("cell", 4, 0, 7, 3),  # object 2, touching object 1
    _rect("nucleus", 0, 6, 2, 8, group_id=1),  # object 3 ...
    _rect("nucleus", 9, 6, 11, 8, group_id=1),  # ... in two parts (same group and label)
    _rect("__ignore__", 6, 2, 7, 3),  # an ignore region over object 2
]


def test_instances_written_beside_masks(tmp_path):
    _scene(tmp_path / "lm", SCENE)
    out = tmp_path / "ds"
    report = prepare(tmp_path / "lm", out, labels="__ignore__,cell,nucleus", val_fraction=0)
    assert report.n_objects == 3
    expected = np.zeros((10, 12), np.int32)
    expected[0:4, 0:4], expected[0:4, 4:8] = 1, 2
    expected[2:4, 6:8] = 0  # ignore
    expected[6:9, 0:3], expected[6:9, 9:12] = 3, 3
    assert Image.open(out / "instances" / "scene.png").mode == "I;16"  # uint16 PNG
    ids = read_instances(out / "instances" / "scene.png")
    np.testing.assert_array_equal(ids, expected)
    mask = read_mask(out / "masks" / "scene.png")
    assert (mask[ids == 1] == 1).all() and (mask[ids == 3] == 2).all() and mask[2, 6] == 255
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["instances"] is True and meta["n_objects"] == 3
    assert meta["objects_per_image"] == {"scene": 3}
    info = describe_dataset(out)
    assert info.instance_files == {"scene": out / "instances" / "scene.png"}
    np.testing.assert_array_equal(info.read_instances("scene"), expected)
    assert verify(out) == []


def test_prepared_instances_agree_with_masks(prepared_dataset):
    meta = json.loads((prepared_dataset / "dataset.json").read_text())
    assert meta["instances"] is True
    for stem, count in meta["objects_per_image"].items():
        ids = read_instances(prepared_dataset / "instances" / f"{stem}.png")
        mask = read_mask(prepared_dataset / "masks" / f"{stem}.png")
        assert set(np.unique(ids).tolist()) == set(range(count + 1))  # ids 1..N, no gap
        np.testing.assert_array_equal(ids > 0, (mask > 0) & (mask != 255))
        for i in range(1, count + 1):
            assert len(np.unique(mask[ids == i])) == 1
    assert meta["n_objects"] == sum(meta["objects_per_image"].values()) > 6


def test_instances_as_tiff_beyond_the_png_range(tmp_path, monkeypatch):
    monkeypatch.setattr("unetkit.data.prepare.PNG_MAX_ID", 2)  # 3 objects: "too many"
    _scene(tmp_path / "lm", SCENE)
    out = tmp_path / "ds"
    prepare(tmp_path / "lm", out, labels="__ignore__,cell,nucleus", val_fraction=0)
    assert sorted(p.name for p in (out / "instances").iterdir()) == ["scene.tif"]
    assert read_instances(out / "instances" / "scene.tif").max() == 3
    assert describe_dataset(out).instance_files == {"scene": out / "instances" / "scene.tif"}


def test_roi_crop_renumbers_the_objects_left(tmp_path):
    src = tmp_path / "lm"
    src.mkdir()
    image = np.zeros((30, 40, 3), np.uint8)
    image[5:15, 10:30] = 230
    Image.fromarray(image).save(src / "a.png")
    shapes = [_rect("plate", 1, 20, 4, 25), _rect("plate", 12, 6, 20, 10)]  # outside, inside
    doc = {"shapes": shapes, "imagePath": "a.png", "imageHeight": 30, "imageWidth": 40}
    (src / "a.json").write_text(json.dumps(doc))
    report = prepare(src, tmp_path / "out", crop_roi=(200, 50, 1000), val_fraction=0)
    ids = read_instances(tmp_path / "out" / "instances" / "a.png")
    assert ids.shape == (10, 20) and report.n_objects == 1
    np.testing.assert_array_equal(ids, read_mask(tmp_path / "out" / "masks" / "a.png"))
