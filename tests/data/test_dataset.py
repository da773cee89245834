"""Dataset folders: layout recognition, class inference, resize policies, crops, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realdata import ISBI
from unetkit.config import DataConfig
from unetkit.data.dataset import SegmentationDataset
from unetkit.data.layout import describe_dataset
from unetkit.errors import UnetkitError


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pair(root: Path, images: str, masks: str, stem: str, mask: np.ndarray, suffix: str = ""):
    h, w = mask.shape
    image = (np.arange(h * w) % 200 + 20).astype(np.uint8).reshape(h, w)
    _save(root / images / f"{stem}.png", image)
    _save(root / masks / f"{stem}{suffix}.png", mask.astype(np.uint8))


def test_layouts(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:6] = 255
    _pair(tmp_path / "bin", "images", "masks", "a", mask)
    info = describe_dataset(tmp_path / "bin")
    assert info.layout == "images-masks" and info.classes == ["background", "class1"]
    assert info.binary_255 and info.channels == 1 and info.split is None
    item = SegmentationDataset(info, config=DataConfig(resize="none"))[0]
    assert item["mask"].unique().tolist() == [0, 1]  # 0/255 -> 0/1

    three = np.array([[0, 1], [3, 255]], np.uint8)
    _pair(tmp_path / "multi", "images", "masks", "a", three)
    info = describe_dataset(tmp_path / "multi")
    assert info.classes == ["background", "class1", "class2", "class3"] and not info.binary_255

    _pair(tmp_path / "car", "imgs", "masks", "car1", mask, suffix="_mask")
    _pair(tmp_path / "car", "imgs", "masks", "car2", mask, suffix="_mask")
    info = describe_dataset(tmp_path / "car")
    assert info.layout == "imgs-masks" and info.mask_suffix == "_mask"
    assert info.stems == ["car1", "car2"]

    voc = tmp_path / "voc"
    _pair(voc, "JPEGImages", "SegmentationClass", "x", np.array([[0, 1], [2, 2]], np.uint8))
    (voc / "class_names.txt").write_text("_background_\ncat\ndog\n")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("x\n")
    info = describe_dataset(voc)
    assert info.layout == "voc" and info.classes == ["_background_", "cat", "dog"]
    assert info.split == {"train": ["x"]}


def test_unrecognised_layout(tmp_path):
    (tmp_path / "pics").mkdir()
    with pytest.raises(UnetkitError, match="unrecognised dataset layout; expected .*VOC"):
        describe_dataset(tmp_path)
    with pytest.raises(UnetkitError, match="not a folder"):
        describe_dataset(tmp_path / "nope")


def test_policies(prepared_dataset):
    info = describe_dataset(prepared_dataset)
    for policy, size in (("letterbox", (32, 32)), ("resize", (32, 48)), ("none", (64, 80))):
        cfg = DataConfig(channels=3, resize=policy, size=(32, 32) if policy != "resize" else size)
        item = SegmentationDataset(info, config=cfg)[0]
        assert item["image"].shape == (3, *size) and item["image"].dtype == torch.float32
        assert item["mask"].shape == size and item["mask"].dtype == torch.int64
    # letterbox pads below the 64x80 image: rows 26..31 of a 32x32 result are mask padding
    cfg = DataConfig(channels=3, resize="letterbox", size=(32, 32))
    item = SegmentationDataset(info, config=cfg)[0]
    assert (item["mask"][26:] == 255).all() and (item["mask"][:25] != 255).all()
    assert (item["image"][:, 26:] == 0).all()
    grey = SegmentationDataset(info, config=DataConfig(channels=1, resize="none"))[0]
    assert grey["image"].shape == (1, 64, 80)
    with pytest.raises(UnetkitError, match="3 channels, expected 4"):
        SegmentationDataset(info, config=DataConfig(channels=4, resize="none"))[0]


def test_random_crops_reproducible(prepared_dataset):
    cfg = DataConfig(channels=3, resize="random-crop", size=(24, 24))
    ds = SegmentationDataset(prepared_dataset, config=cfg, train=True, seed=3)
    other = SegmentationDataset(prepared_dataset, config=cfg, train=True, seed=3)
    first = ds[2]["image"]
    assert first.shape == (3, 24, 24)
    assert torch.equal(first, other[2]["image"])  # same (seed, epoch, index): same crop
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2]["image"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[2]["image"])
    full = SegmentationDataset(prepared_dataset, config=cfg, train=False)[2]
    assert full["image"].shape == (3, 64, 80)  # not training: the whole image
    # the crop is a window of the full image
    windows = full["image"].unfold(1, 24, 1).unfold(2, 24, 1)  # (3, 41, 57, 24, 24)
    hits = (windows == first[:, None, None]).flatten(3).all(-1).all(0)
    assert hits.sum() == 1


def test_small_images_padded_and_weights(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:7] = 1
    _pair(tmp_path / "d", "images", "masks", "a", mask)
    calls = []

    def weight_fn(m: np.ndarray) -> np.ndarray:
        calls.append(m.shape)
        return np.where(m == 1, 3.0, 1.0)

    cfg = DataConfig(resize="random-crop", size=(10, 12))
    ds = SegmentationDataset(tmp_path / "d", config=cfg, train=True, weight_fn=weight_fn)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
    assert calls == [(6, 8)]  # computed once on the full mask, then cached
    assert item["mask"].shape == (10, 12) and item["weight"].shape == (10, 12)
    # 6x8 centred in 10x12: 2 rows / 2 columns of padding on each side
    assert (item["mask"][:2] == 255).all() and (item["mask"][:, :2] == 255).all()
    assert item["mask"][2:8, 2:10].tolist() == mask.tolist()
    assert (item["weight"][:2] == 0).all()
    assert torch.equal(item["weight"][2:8, 2:10], torch.from_numpy(weight_fn(mask)).float())


def test_cache_and_stems(prepared_dataset):
    info = describe_dataset(prepared_dataset)
    ds = SegmentationDataset(info, stems=info.split["val"], config=DataConfig(channels=3))
    assert len(ds) == 2 and ds.stems == info.split["val"]
    assert ds.classes == ["background", "cell", "nucleus"] and ds.ignore_index == 255
    ds[0]
    assert list(ds._cache) == [info.split["val"][0]]
    with pytest.raises(UnetkitError, match="stems without an image/mask pair: zz"):
        SegmentationDataset(info, stems=["zz"])


def test_the_cache_follows_the_available_memory(prepared_dataset, monkeypatch):
    """The same measure as the prediction's tile size (device.available_memory): a quarter of
    it, at most 2 GiB, holds the whole training set or nothing is cached."""
    from unetkit.data import dataset as dataset_module

    info = describe_dataset(prepared_dataset)
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 4096)  # a quarter: 1 KiB
    ds = SegmentationDataset(info, stems=info.split["val"], config=DataConfig(channels=3))
    ds[0]
    assert not ds._cache
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 2**34)
    ds = SegmentationDataset(info, stems=info.split["val"], config=DataConfig(channels=3))
    ds[0]
    assert list(ds._cache) == [info.split["val"][0]]


def test_available_memory_reads_memavailable_then_falls_back(monkeypatch, tmp_path):
    import builtins
    import os

    from unetkit.device import available_memory

    real_open = builtins.open
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemFree:  10 kB\nMemAvailable:  50 kB\n")

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            return real_open(meminfo, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert available_memory() == 50 * 1024
    meminfo.write_text("MemTotal:  100 kB\n")  # no MemAvailable (old kernels): free pages
    monkeypatch.setattr(
        os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}[name]
    )
    assert available_memory() == 3 * 4096

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert available_memory() == 2**31


@pytest.mark.slow
@pytest.mark.skipif(not ISBI.is_dir(), reason="ISBI 2012 data not available")
def test_isbi_inferred_classes():
    info = describe_dataset(ISBI)
    assert info.layout == "images-masks" and info.classes == ["background", "class1"]
    assert info.channels == 1 and len(info.stems) == 30 and not info.binary_255
    cfg = DataConfig(channels=1, resize="random-crop", size=(64, 64))
    item = SegmentationDataset(info, stems=["00"], config=cfg, train=True)[0]
    assert item["image"].shape == (1, 64, 64) and set(item["mask"].unique().tolist()) <= {0, 1}


def test_oversampling_centres_a_share_of_crops_on_rare_foreground(tmp_path):
    """DataConfig.oversample: a third of the crops hold a rare class that uniform crops miss."""
    from unetkit.config import DataConfig
    from unetkit.data.dataset import SegmentationDataset

    root = tmp_path / "rare"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((200, 200), np.uint8)
    mask[150:154, 20:24] = 1  # 16 px of 40000: a crop of 32 at random holds it ~1.5 % of times
    Image.fromarray(mask * 200).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    (root / "classes.txt").write_text("background\nrare\n")
    share = {}
    for p in (0.0, 0.33):
        cfg = DataConfig(size=(32, 32), oversample=p)
        ds = SegmentationDataset(root, config=cfg, train=True, seed=0)
        hits = 0
        for epoch in range(300):
            ds.set_epoch(epoch)
            hits += bool((ds[0]["mask"] == 1).any())
        share[p] = hits / 300
    assert share[0.0] < 0.08
    assert 0.25 < share[0.33] < 0.45


def test_area_sampling_gives_large_images_crops_by_area(tmp_path):
    """DataConfig.sampling area: one crop per patch-sized area of each image per epoch."""
    root = tmp_path / "mixed"
    _pair(root, "images", "masks", "big", np.zeros((128, 96), np.uint8))  # 12 patches of 32^2
    _pair(root, "images", "masks", "small", np.zeros((20, 20), np.uint8))  # smaller than one
    _pair(root, "images", "masks", "mid", np.zeros((32, 80), np.uint8))  # 2.5 -> 2
    (root / "classes.txt").write_text("background\nthing\n")
    stems = ["big", "mid", "small"]
    area = SegmentationDataset(root, stems, DataConfig(size=(32, 32), sampling="area"), True)
    assert len(area) == 3  # before the plan: one sample per image
    assert area.plan_crops() == {"big": 12, "mid": 2, "small": 1}
    assert len(area) == 15
    assert [area.stem_of(i) for i in range(15)] == ["big"] * 12 + ["mid"] * 2 + ["small"]
    area.set_epoch(1)
    crops = [area[i] for i in range(12)]
    assert {c["stem"] for c in crops} == {"big"}
    assert all(c["image"].shape == (1, 32, 32) for c in crops)
    # each slot has its own random crop: the 12 crops of "big" are not all the same window
    assert len({c["image"].numpy().tobytes() for c in crops}) > 6
    for config, train in ((DataConfig(size=(32, 32)), True),  # image: one crop per image
                          (DataConfig(size=(32, 32), sampling="area"), False)):  # fmt: skip
        ds = SegmentationDataset(root, stems, config, train)
        assert ds.plan_crops() == {"big": 1, "mid": 1, "small": 1} and len(ds) == 3
    with pytest.raises(ValueError, match="sampling"):
        DataConfig(sampling="pixels")


def test_held_out_regions_split_the_labels_of_one_image(tmp_path):
    """A training set ignores the labels of each image's held-out band (and never centres a
    crop on its foreground); the validation set scores the band alone."""
    root = tmp_path / "band"
    mask = np.zeros((32, 40), np.uint8)
    mask[10:20, 34:38] = 1  # the only object: inside the band (columns 32..39)
    _pair(root, "images", "masks", "a", mask)
    (root / "classes.txt").write_text("background\nthing\n")
    box = {"a": (0, 32, 32, 40)}
    config = DataConfig(size=(32, 40), oversample=1.0)
    train = SegmentationDataset(root, ["a"], config, train=True, regions=box)
    _, seen = train.raw("a")
    assert (seen[:, 32:] == 255).all() and (seen[:, :32] == 0).all()
    assert train._load("a")[-1] == {}  # no foreground left to centre a crop on
    val = SegmentationDataset(root, ["a"], config, train=False, regions=box)
    _, scored = val.raw("a")
    assert (scored[:, :32] == 255).all() and (scored[:, 32:] == mask[:, 32:]).all()
    whole = SegmentationDataset(root, ["a"], config, train=False)
    assert (whole.raw("a")[1] == mask).all()


def test_min_crops_repeats_every_image_alike_with_crops_of_their_own(tmp_path):
    root = tmp_path / "few"
    for stem in ("a", "b", "c"):
        _pair(root, "images", "masks", stem, np.zeros((64, 64), np.uint8))
    (root / "classes.txt").write_text("background\nthing\n")
    ds = SegmentationDataset(root, None, DataConfig(size=(32, 32)), train=True)
    assert ds.plan_crops(10) == {"a": 4, "b": 4, "c": 4} and len(ds) == 12
    ds.set_epoch(1)
    crops = {ds[i]["image"].numpy().tobytes() for i in range(4)}
    assert len(crops) > 1  # the repeats of "a" are crops of their own
    assert ds.plan_crops() == {"a": 1, "b": 1, "c": 1} and len(ds) == 3
    evaluation = SegmentationDataset(root, None, DataConfig(size=(32, 32)))  # not training
    assert evaluation.plan_crops(10) == dict.fromkeys("abc", 1)
