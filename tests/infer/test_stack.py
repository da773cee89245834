"""TIFF stacks (time-lapses, z-stacks, page sequences): read plane by plane, every plane predicted
as the same plane saved as an image of its own would be, multi-page masks that tifffile reads
back with the input's axes (``unetkit.data.stack``, ``unetkit.infer.stack``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit import DataConfig, PredictConfig, make_checkpoint, save_checkpoint
from unetkit.cli import main
from unetkit.config import ObjectConfig
from unetkit.data.imageio import read_mask
from unetkit.data.instances import read_instances
from unetkit.data.stack import TiffStack, stack_layout
from unetkit.errors import UnetkitError
from unetkit.infer import Predictor, predict_paths

try:  # tests/ as a package or as a plain folder on sys.path
    from .corrupt import run_cli
except ImportError:
    from corrupt import run_cli

CLASSES = ["background", "grey", "white"]
PALETTE = [[0, 0, 0], [0, 128, 0], [255, 0, 0]]
LEVELS = (0.1, 0.5, 0.9)
NORM = {"mean": (0.5,), "std": (0.25,)}
H, W = 40, 52


@pytest.fixture(scope="module")
def models(tmp_path_factory, grey_level_model, tiny_checkpoint) -> dict:
    """A grey-level semantic model, the same as an instance model, and an untrained RGB one
    (per-image normalisation, so that every plane is normalised on its own)."""
    folder = tmp_path_factory.mktemp("models")
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), **NORM)
    semantic = make_checkpoint(
        grey_level_model(), classes=CLASSES, palette=PALETTE, preprocessing=pre
    )
    instance = make_checkpoint(
        grey_level_model(), classes=["background", "cell"], palette=PALETTE[:2],
        preprocessing=pre, task="instance",
        extra={"objects": ObjectConfig(min_size=0).to_dict()},
    )  # fmt: skip
    rgb = tiny_checkpoint(preprocessing=DataConfig(channels=3, size=(32, 32), normalize="image"))
    return {
        "semantic": save_checkpoint(semantic, folder / "semantic.pt"),
        "instance": save_checkpoint(instance, folder / "instance.pt"),
        "rgb": save_checkpoint(rgb, folder / "rgb.pt"),
    }


def _predictor(path, **cfg) -> Predictor:
    config = PredictConfig(precision="fp32", strategy="tile", tile=(32, 32), **cfg)
    return Predictor.from_checkpoint(path, config, device="cpu")


def _plane(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A dark image with a white and a grey square that move with ``seed`` (uint8 (H, W))."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.int64)
    y, x = rng.integers(2, h // 2, 2)
    mask[y : y + h // 3, x : x + w // 3] = 2
    y, x = rng.integers(2, h // 2, 2)
    mask[y : y + h // 3, x + w // 3 : x + w // 3 + w // 4] = 1
    image = 255 * np.asarray(LEVELS)[mask] + rng.normal(0, 8, (h, w))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _cells(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Touching grey cells with white edges on a dark ground, larger and fewer with ``seed``."""
    from unetkit.data.targets import object_edges

    ids = np.zeros((h, w), np.int32)
    count, step = 0, 8 + 3 * seed
    for top in range(3, h - step, step):
        for left in range(3 + seed, w - step, step):
            count += 1
            ids[top : top + step, left : left + step] = count
    level = np.where(ids > 0, np.where(object_edges(ids), LEVELS[2], LEVELS[1]), LEVELS[0])
    return np.rint(255 * level).astype(np.uint8)


def _singles(planes: list[np.ndarray], folder: Path) -> Path:
    """Each plane as a PNG of its own (``p000.png``, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, plane in enumerate(planes):
        Image.fromarray(plane).save(folder / f"p{i:03d}.png")
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


# -- reading -------------------------------------------------------------------------------------
def test_planes_read_one_at_a_time_equal_numpy_indexing(tmp_path):
    hyper = np.stack([np.stack([np.stack([_plane(10 * t + z + c) for c in range(3)])
                                for z in range(2)]) for t in range(4)])  # fmt: skip
    tifffile.imwrite(tmp_path / "ij.tif", hyper, imagej=True, metadata={"axes": "TZCYX"})
    with TiffStack(tmp_path / "ij.tif") as stack:
        assert (stack.layout.axes, stack.layout.plane_axes, len(stack)) == ("TZCYX", "TZ", 8)
        assert stack.layout.label(5) == "t=2,z=1"
        for i in range(8):
            t, z = divmod(i, 2)
            np.testing.assert_array_equal(stack.read(i), np.moveaxis(hyper[t, z], 0, -1))
    zt = np.stack([np.stack([_plane(3 * z + t) for t in range(3)]) for z in range(2)])
    tifffile.imwrite(tmp_path / "zt.ome.tif", zt, ome=True, metadata={"axes": "ZTYX"})
    with TiffStack(tmp_path / "zt.ome.tif") as stack:
        assert stack.layout.plane_axes == "ZT" and stack.layout.label(4) == "z=1,t=1"
        np.testing.assert_array_equal(stack.read(4)[:, :, 0], zt[1, 1])
    rgb = np.stack([np.dstack([_plane(s), _plane(s + 1), _plane(s + 2)]) for s in range(3)])
    frames = [Image.fromarray(p) for p in rgb]
    frames[0].save(tmp_path / "pil.tif", save_all=True, append_images=frames[1:])
    with tifffile.TiffWriter(tmp_path / "series.tif") as writer:
        for plane in rgb[:, :, :, 0]:
            writer.write(plane)  # one series per frame
    with TiffStack(tmp_path / "pil.tif") as stack:
        assert stack.layout.axes == "IYXS" and stack.layout.label(2) == "plane=2"
        np.testing.assert_array_equal(stack.read(2), rgb[2])
    with TiffStack(tmp_path / "series.tif") as stack:
        assert (stack.layout.series, stack.layout.channels) == (3, 1)
        np.testing.assert_array_equal(stack.read(1)[:, :, 0], rgb[1, :, :, 0])


def test_single_images_are_not_stacks(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", _plane(0))
    tifffile.imwrite(tmp_path / "rgb.tif", np.dstack([_plane(0)] * 3))
    tifffile.imwrite(tmp_path / "c.tif", np.stack([_plane(0)] * 3), imagej=True,
                     metadata={"axes": "CYX"})  # fmt: skip
    Image.fromarray(_plane(0)).save(tmp_path / "a.png")
    for name in ("one.tif", "rgb.tif", "c.tif", "a.png"):
        assert stack_layout(tmp_path / name) is None, name


# -- predicting ----------------------------------------------------------------------------------
def test_every_page_of_a_multi_page_tiff_is_predicted_as_that_page_alone(models, tmp_path):
    """Fails on main: the file was refused ("5 frames ... save each frame as its own file")."""
    planes = [_plane(s) for s in range(5)]
    frames = [Image.fromarray(p) for p in planes]
    (tmp_path / "in").mkdir()
    frames[0].save(tmp_path / "in" / "movie.tif", save_all=True, append_images=frames[1:])
    predictor = _predictor(models["semantic"])
    report = predict_paths(predictor, [tmp_path / "in"], tmp_path / "out", progress=False)
    assert not report.failed and [p.name for p in report.written] == ["movie.tif"]
    singles = _singles(planes, tmp_path / "singles")
    predict_paths(predictor, [singles], tmp_path / "single_out", progress=False)
    with tifffile.TiffFile(tmp_path / "out" / "movie.tif") as tif:
        series = tif.series[0]
        assert (series.axes, series.shape, series.dtype) == ("QYX", (5, H, W), np.uint8)
        assert len(tif.pages) == 5 and tif.is_ome
        masks = series.asarray()
    for i in range(5):
        alone = read_mask(tmp_path / "single_out" / f"p{i:03d}.png")
        np.testing.assert_array_equal(masks[i], alone)  # bitwise, plane by plane
    assert len(np.unique(masks)) == 3 and not (masks[0] == masks[1]).all()  # it means something
    rows = _rows(tmp_path / "out" / "summary.csv")
    assert [r["image"] for r in rows] == [f"movie.tif[plane={i}]" for i in range(5)]
    singles_rows = _rows(tmp_path / "single_out" / "summary.csv")
    for row, alone in zip(rows, singles_rows):
        assert {k: v for k, v in row.items() if k != "image"} == {
            k: v for k, v in alone.items() if k != "image"
        }
    preview = np.asarray(Image.open(tmp_path / "out" / "movie_preview.png"))
    assert preview.shape == (2 * H + 2, 3 * W + 4, 3)  # 5 planes: a 3 x 2 grid
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "movie.tif", "movie_preview.png", "summary.csv"
    ]  # fmt: skip


def test_hyperstack_and_ome_axes_are_kept_in_the_mask(models, tmp_path):
    rgb = np.stack(
        [
            np.stack([np.stack([_plane(5 * t + z + c) for c in range(3)]) for z in range(2)])
            for t in range(3)
        ]
    )  # (T, Z, C, H, W)
    tifffile.imwrite(tmp_path / "hyper.tif", rgb, imagej=True, metadata={"axes": "TZCYX"})
    zt = np.stack([np.stack([_plane(7 * z + t) for t in range(3)]) for z in range(2)])
    tifffile.imwrite(tmp_path / "zt.ome.tif", zt, ome=True, metadata={"axes": "ZTYX"})
    out = tmp_path / "out"
    argv = ["predict", str(models["rgb"]), str(tmp_path / "hyper.tif"), "-o", str(out)]
    code = main([*argv, "--no-progress", "--device", "cpu", "--strategy", "tile", "--tile", "32"])
    assert code == 0
    with tifffile.TiffFile(out / "hyper.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
        assert tif.series[0].shape == (3, 2, H, W)
        assert (tif.imagej_metadata["frames"], tif.imagej_metadata["slices"]) == (3, 2)
        masks = tif.series[0].asarray()
    rgb_predictor = _predictor(models["rgb"])
    for t in range(3):
        for z in range(2):
            alone = rgb_predictor.predict_mask(np.moveaxis(rgb[t, z], 0, -1))
            np.testing.assert_array_equal(masks[t, z], alone)
    rows = _rows(out / "summary.csv")
    assert [r["image"] for r in rows][:3] == ["hyper.tif[t=0,z=0]", "hyper.tif[t=0,z=1]",
                                              "hyper.tif[t=1,z=0]"]  # fmt: skip
    predictor = _predictor(models["semantic"])
    predict_paths(predictor, [tmp_path / "zt.ome.tif"], out, progress=False)
    with tifffile.TiffFile(out / "zt.tif") as tif:  # NAME.ome.tif: outputs named from NAME
        assert tif.is_ome and (tif.series[0].axes, tif.series[0].shape) == ("ZTYX", (2, 3, H, W))
        masks = tif.series[0].asarray()
    for z in range(2):
        for t in range(3):
            np.testing.assert_array_equal(masks[z, t], predictor.predict_mask(zt[z, t]))


def test_objects_of_every_plane(models, tmp_path):
    planes = [_cells(s) for s in range(3)]
    tifffile.imwrite(tmp_path / "cells.tif", np.stack(planes), imagej=True,
                     metadata={"axes": "TYX"})  # fmt: skip
    predictor = _predictor(models["instance"])
    out = tmp_path / "out"
    report = predict_paths(predictor, [tmp_path / "cells.tif"], out, progress=False)
    assert not report.failed
    with tifffile.TiffFile(out / "cells_instances.tif") as tif:
        series = tif.series[0]
        assert (series.axes, series.shape, series.dtype) == ("TYX", (3, H, W), np.int32)
        ids = series.asarray()
    with tifffile.TiffFile(out / "cells.tif") as tif:
        masks = tif.series[0].asarray()
    objects = _rows(out / "cells_objects.csv")
    assert list(objects[0])[:4] == ["plane", "t", "id", "class"]
    singles = _singles(planes, tmp_path / "singles")
    predict_paths(predictor, [singles], tmp_path / "single_out", progress=False)
    summary = _rows(out / "summary.csv")
    for i in range(3):
        alone = read_instances(tmp_path / "single_out" / f"p{i:03d}_instances.png")
        np.testing.assert_array_equal(ids[i], alone)
        np.testing.assert_array_equal(
            masks[i], read_mask(tmp_path / "single_out" / f"p{i:03d}.png")
        )
        mine = [{k: v for k, v in r.items() if k not in ("plane", "t")}
                for r in objects if r["plane"] == str(i)]  # fmt: skip
        assert all(r["t"] == str(i) for r in objects if r["plane"] == str(i))
        assert mine == _rows(tmp_path / "single_out" / f"p{i:03d}_objects.csv")
        assert summary[i]["image"] == f"cells.tif[t={i}]"
        assert summary[i]["objects"] == str(int(alone.max())) != "0"
    assert ids[0].max() > ids[2].max()  # the planes differ: the test means something


def test_a_single_page_tiff_goes_the_normal_way(models, tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", _plane(0))
    out = tmp_path / "out"
    predict_paths(_predictor(models["semantic"]), [tmp_path / "one.tif"], out, progress=False)
    assert (out / "one.png").is_file() and (out / "one_overlay.png").is_file()
    assert not (out / "one.tif").exists()
    assert _rows(out / "summary.csv")[0]["image"] == "one.tif"


# -- refusals, skipping, interruptions -----------------------------------------------------------
def _bad_stacks(folder: Path) -> dict[str, str]:
    """Files that look like stacks and cannot be read as one -> what their error says."""
    folder.mkdir()
    with tifffile.TiffWriter(folder / "sizes.tif") as writer:
        writer.write(_plane(0))
        writer.write(_plane(1, h=H + 5))
    tifffile.imwrite(folder / "axes.tif", np.stack([np.stack([_plane(0)] * 2)] * 3),
                     metadata={"axes": "EZYX"})  # fmt: skip
    with tifffile.TiffWriter(folder / "empty.tif") as writer:
        writer.write(np.zeros((0, H, W), np.uint8))
        writer.write(_plane(0))  # a second page: a multi-page file whose stack is empty
    return {
        "sizes.tif": "pages of different sizes",
        "axes.tif": "axes EZYX",
        "empty.tif": "no planes",
    }


def test_bad_stacks_are_refused_in_one_line_and_nothing_is_written(
    models, tmp_path, capsys, caplog
):
    expected = _bad_stacks(tmp_path / "in")
    for name, why in expected.items():
        with pytest.raises(UnetkitError, match=why):
            TiffStack(tmp_path / "in" / name)
    out = tmp_path / "out"
    argv = ["predict", str(models["semantic"]), str(tmp_path / "in"), "-o", str(out)]
    code, lines = run_cli([*argv, "--no-progress", "--device", "cpu"], capsys, caplog)
    assert code == 2
    for name, why in expected.items():
        named = [line for line in lines if name in line]
        assert len(named) == 1 and why in named[0], (name, lines)
        assert "\n" not in named[0] and "Traceback" not in "\n".join(lines)
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]


def test_a_plane_the_model_cannot_take_is_one_line(models, tmp_path):
    two = np.stack([np.stack([_plane(0), _plane(1)])] * 3)  # 2 channels, an RGB model
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "ZCYX"})
    report = predict_paths(_predictor(models["rgb"]), [tmp_path / "two.tif"], tmp_path / "out",
                           progress=False)  # fmt: skip
    ((path, message),) = report.failed
    assert "two.tif [z=0]" in message and "2 channels" in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.csv"]


def test_skip_existing_skips_a_finished_stack(models, tmp_path):
    tifffile.imwrite(
        tmp_path / "s.tif", np.stack([_cells(s) for s in range(3)]), photometric="minisblack"
    )
    predictor = _predictor(models["instance"])
    out = tmp_path / "out"
    first = predict_paths(predictor, [tmp_path / "s.tif"], out, progress=False)
    before = (out / "summary.csv").read_text()
    for name in ("s.tif", "s_instances.tif", "s_objects.csv", "s_preview.png"):
        os.utime(out / name, (1, 1))
    again = predict_paths(predictor, [tmp_path / "s.tif"], out, skip_existing=True,
                          progress=False)  # fmt: skip
    assert [p.name for p in again.skipped] == ["s.tif"] and not again.written
    assert again.rows == first.rows and (out / "summary.csv").read_text() == before
    assert os.stat(out / "s.tif").st_mtime == 1
    (out / "s_preview.png").unlink()  # not finished: predicted again
    third = predict_paths(predictor, [tmp_path / "s.tif"], out, skip_existing=True,
                          progress=False)  # fmt: skip
    assert [p.name for p in third.written] == ["s.tif"] and os.stat(out / "s.tif").st_mtime > 1


def test_an_interrupted_stack_leaves_no_final_file(models, tmp_path, monkeypatch):
    tifffile.imwrite(
        tmp_path / "s.tif", np.stack([_cells(s) for s in range(4)]), photometric="minisblack"
    )
    predictor = _predictor(models["instance"])
    real, calls = predictor.predict_scored_objects, []

    def stopping(image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of the stack
        return real(image)

    monkeypatch.setattr(predictor, "predict_scored_objects", stopping)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_paths(predictor, [tmp_path / "s.tif"], out, progress=False)
    assert list(out.iterdir()) == []  # no final file, no temporary file
    monkeypatch.setattr(predictor, "predict_objects", real)
    report = predict_paths(predictor, [tmp_path / "s.tif"], out, skip_existing=True,
                           progress=False)  # fmt: skip
    assert [p.name for p in report.written] == ["s.tif"]
    with tifffile.TiffFile(out / "s_instances.tif") as tif:
        assert tif.series[0].shape == (4, H, W)


def test_other_commands_still_refuse_a_multi_page_tiff(tmp_path):
    from unetkit.data.imageio import read_image

    frames = [Image.fromarray(_plane(s)) for s in range(2)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(UnetkitError, match=r"2 frames .*`unetkit predict` predicts TIFF stacks"):
        read_image(tmp_path / "m.tif")
