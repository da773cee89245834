"""``predict --zarr``: the mask of an image read by region as an OME-NGFF 0.4 label image
(``unetkit.infer.zarr_out``), written band by band from the strips and renamed into place:
the same pixels as the BigTIFF, every level the full one subsampled, resumable like it."""

from __future__ import annotations

import csv
import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_largeimage import CLASSES, PALETTE, _image, _write, model_path  # noqa: F401

from unetkit import PredictConfig
from unetkit.cli import main
from unetkit.files import TEMP_TAG, remove_temp_dirs
from unetkit.infer import zarr_out
from unetkit.infer.outputs import predict_paths
from unetkit.infer.predict import Predictor
from unetkit.infer.zarr_out import level_shapes, open_mask, write_label_zarr

CONFIG = PredictConfig(precision="fp32")
KWARGS = {"progress": False, "large_pixels": 100 * 100}
TOP = 128  # instead of 2048: a 600 x 200 mask gets levels 0..3


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path (a zarr, compared byte for byte)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_TAG in p.name)


def _levels(path: Path) -> list[np.ndarray]:
    attrs = json.loads((path / ".zattrs").read_text())
    paths = [d["path"] for d in attrs["multiscales"][0]["datasets"]]
    return [np.asarray(open_mask(path, int(p))[:]) for p in paths]


def _check_label_image(path: Path, mask: np.ndarray, top: int) -> None:
    """``path`` is the OME-NGFF 0.4 label image of ``mask`` as ``zarr_out`` documents it."""
    assert json.loads((path / ".zgroup").read_text()) == {"zarr_format": 2}
    attrs = json.loads((path / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4" and multiscale["name"] == path.name.split(".")[0]
    assert multiscale["axes"] == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    shapes = level_shapes(mask.shape, top)
    assert len(shapes) > 1 and max(shapes[-1]) <= top < max(shapes[-2])
    datasets = multiscale["datasets"]
    assert [d["path"] for d in datasets] == [str(k) for k in range(len(shapes))]
    for k, dataset in enumerate(datasets):
        transforms = dataset["coordinateTransformations"]
        assert transforms == [{"type": "scale", "scale": [2.0**k, 2.0**k]}]  # 1, 2, 4, ...
    label = attrs["image-label"]
    assert label["version"] == "0.4"
    assert label["colors"] == [
        {"label-value": i, "rgba": [*PALETTE[i], 255]} for i in range(len(CLASSES))
    ]
    assert label["properties"] == [{"label-value": i, "class": c} for i, c in enumerate(CLASSES)]
    for k, level in enumerate(_levels(path)):
        assert level.dtype == np.uint8 and level.shape == shapes[k]
        np.testing.assert_array_equal(level, mask[:: 2**k, :: 2**k])  # every 2**k-th pixel
        meta = json.loads((path / str(k) / ".zarray").read_text())
        assert meta["chunks"] == [256, 256] and meta["dimension_separator"] == "/"
        assert meta["compressor"]["id"] in ("blosc", "zlib") and meta["fill_value"] == 0


# -- the writer ---------------------------------------------------------------------------------
def test_levels_pick_every_2nd_pixel_and_the_metadata_is_ome_ngff_04(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (1100, 530)).astype(np.uint8)
    mask[:256, :256] = 0  # a chunk of the fill value: not stored
    strips = [mask[y : y + 256] for y in range(0, 1100, 256)]
    write_label_zarr(tmp_path / "m.ome.zarr", iter(strips), mask.shape, PALETTE, CLASSES, top=256)
    _check_label_image(tmp_path / "m.ome.zarr", mask, 256)
    assert len(_levels(tmp_path / "m.ome.zarr")) == 4  # 1100 -> 550 -> 275 -> 138 <= 256
    files = _tree(tmp_path / "m.ome.zarr")
    assert "0/0/1" in files and "0/1/0" in files and "0/0/0" not in files  # nested chunk keys
    # bands of any heights give the same zarr, byte for byte
    cuts = [0, 1, 300, 301, 777, 1100]
    bands = (mask[a:b] for a, b in zip(cuts, cuts[1:]))
    write_label_zarr(
        tmp_path / "n.ome.zarr", bands, mask.shape, PALETTE, CLASSES, name="m", top=256
    )
    assert _tree(tmp_path / "n.ome.zarr") == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ome.zarr", "n.ome.zarr"]


def test_no_band_stays_in_memory(tmp_path):
    """Each band is let go once its rows are written (level 0) or subsampled (the others)."""
    mask = np.random.default_rng(1).integers(0, 3, (1300, 700)).astype(np.uint8)
    refs: list[weakref.ref] = []
    alive: list[int] = []

    def bands():
        for y in range(0, 1300, 256):
            gc.collect()
            alive.append(sum(r() is not None for r in refs[:-1]))  # but the one just used
            band = mask[y : y + 256].copy()
            refs.append(weakref.ref(band))
            yield band

    write_label_zarr(tmp_path / "m.ome.zarr", bands(), mask.shape, PALETTE, CLASSES, top=64)
    assert alive == [0] * 6
    heights = [len(level) for level in _levels(tmp_path / "m.ome.zarr")]
    assert heights == [1300, 650, 325, 163, 82, 41]


def test_a_failed_write_leaves_the_previous_zarr_and_no_temp(tmp_path):
    mask = np.ones((300, 40), np.uint8)
    target = tmp_path / "m.ome.zarr"
    write_label_zarr(target, [mask], mask.shape, PALETTE, CLASSES)
    before = _tree(target)

    def broken():
        yield mask[:256] * 2
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_label_zarr(target, broken(), mask.shape, PALETTE, CLASSES)
    with pytest.raises(ValueError, match="rows were written"):  # too few rows: not a mask
        write_label_zarr(target, [mask[:100]], mask.shape, PALETTE, CLASSES)
    assert _tree(target) == before and _temps(tmp_path) == []


def test_more_than_256_classes_are_uint16(tmp_path):
    mask = np.arange(300 * 20, dtype=np.uint16).reshape(300, 20) % 300
    classes = [f"c{i}" for i in range(300)]
    write_label_zarr(tmp_path / "m.ome.zarr", [mask], mask.shape, PALETTE, classes)
    (level,) = _levels(tmp_path / "m.ome.zarr")
    assert level.dtype == np.uint16 and np.array_equal(level, mask)


def test_remove_temp_dirs_removes_only_the_temp_folders_of_that_target(tmp_path):
    target = tmp_path / "big.ome.zarr"
    stale = tmp_path / f".big.ome.zarr{TEMP_TAG}k3j4h5g6"
    (stale / "0" / "0").mkdir(parents=True)
    keep = [
        tmp_path / f".other.ome.zarr{TEMP_TAG}k3j4h5g6",  # another target's
        tmp_path / f".big.ome.zarr{TEMP_TAG}k3j4",  # not our naming
        tmp_path / "big.ome.zarr",
    ]
    for path in keep:
        path.mkdir()
    a_file = tmp_path / f".big.ome.zarr{TEMP_TAG}abcdefgh"  # a file: clean_stale_temps's
    a_file.write_bytes(b"")
    assert remove_temp_dirs(target) == [stale]
    assert all(p.is_dir() for p in keep) and a_file.is_file()


# -- predict --zarr -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_path):  # noqa: F811
    """One uninterrupted run of a 600 x 200 slide (3 strips) with the BigTIFF and one with the
    zarr (levels up to ``TOP``)."""
    folder = tmp_path_factory.mktemp("ref")
    (folder / "in").mkdir()
    _write(folder / "in" / "big.tif", _image(600, 200))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zarr_out, "PYRAMID_TOP", TOP)
        for out, zarr in (("tif", False), ("zarr", True)):
            predictor = Predictor.from_checkpoint(model_path, CONFIG, "cpu")
            predict_paths(predictor, [folder / "in"], folder / out, zarr=zarr, **KWARGS)
    return folder


def test_zarr_equals_the_bigtiff_pixel_for_pixel(reference, model_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(zarr_out, "PYRAMID_TOP", TOP)
    tif, out = reference / "tif", reference / "zarr"
    assert sorted(p.name for p in out.iterdir()) == [
        "big.ome.zarr", "big_preview.png", "summary.csv",
    ]  # fmt: skip
    mask = tifffile.imread(tif / "big.tif")
    assert mask.shape == (600, 200) and len(np.unique(mask)) >= 2
    _check_label_image(out / "big.ome.zarr", mask, TOP)
    for name in ("big_preview.png", "summary.csv"):  # unchanged by the mask's format
        assert (out / name).read_bytes() == (tif / name).read_bytes(), name
    # --skip-existing reads the class counts back from the zarr
    predictor = Predictor.from_checkpoint(model_path, CONFIG, "cpu")
    again = predict_paths(
        predictor, [reference / "in"], out, zarr=True, skip_existing=True, **KWARGS
    )
    assert [p.name for p in again.skipped] == ["big.tif"] and not again.written
    with open(tif / "summary.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert {k: str(v) for k, v in again.rows[0].items()} == row


def test_an_interrupted_run_resumes_to_the_same_zarr(
    reference,
    model_path,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Stopped after the first strip: the rerun predicts the rest and assembles the zarr of an
    uninterrupted run, byte for byte."""
    from unetkit.infer.strips import Strips

    monkeypatch.setattr(zarr_out, "PYRAMID_TOP", TOP)
    real_write = Strips.write

    def write_then_stop(self, index, tiles):
        real_write(self, index, tiles)
        raise KeyboardInterrupt  # as Ctrl-C once the first strip is written

    monkeypatch.setattr(Strips, "write", write_then_stop)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_paths(
            Predictor.from_checkpoint(model_path, CONFIG, "cpu"), [reference / "in"], out,
            zarr=True, **KWARGS,
        )  # fmt: skip
    assert sorted(p.name for p in (out / ".big.unetkit-part").iterdir()) == [
        "000000.strip", "job.json",
    ]  # fmt: skip
    assert not (out / "big.ome.zarr").exists()
    monkeypatch.setattr(Strips, "write", real_write)
    report = predict_paths(
        Predictor.from_checkpoint(model_path, CONFIG, "cpu"), [reference / "in"], out,
        zarr=True, **KWARGS,
    )  # fmt: skip
    assert [p.name for p in report.written] == ["big.tif"]
    assert _tree(out / "big.ome.zarr") == _tree(reference / "zarr" / "big.ome.zarr")
    assert sorted(p.name for p in out.iterdir()) == [
        "big.ome.zarr", "big_preview.png", "summary.csv",
    ]  # fmt: skip


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from unetkit import PredictConfig
    from unetkit.infer import zarr_out
    from unetkit.infer.outputs import predict_paths
    from unetkit.infer.predict import Predictor

    zarr_out.PYRAMID_TOP = int(sys.argv[4])
    add = zarr_out._Level.add

    def add_then_die(self, band, y0):  # SIGKILL in the middle of the zarr: nothing cleans up
        add(self, band, y0)
        if y0 >= 256 and self.factor == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    zarr_out._Level.add = add_then_die
    config = PredictConfig(precision="fp32")
    predictor = Predictor.from_checkpoint(Path(sys.argv[1]), config, "cpu")
    predict_paths(
        predictor, [sys.argv[2]], sys.argv[3], progress=False, large_pixels=100 * 100,
        zarr=True,
    )
    """
)


def test_a_run_killed_while_writing_the_zarr_leaves_no_zarr_and_the_rerun_cleans_up(
    reference,
    model_path,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """SIGKILL while the zarr is half written: no ``big.ome.zarr``, a temporary folder; the
    rerun predicts nothing (the strips are all there), writes the same zarr and removes the
    temporary folder."""
    out = tmp_path / "out"
    argv = [str(model_path), str(reference / "in"), str(out), str(TOP)]
    done = subprocess.run([sys.executable, "-c", KILLED, *argv], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert not (out / "big.ome.zarr").exists()
    (temp,) = _temps(out)
    assert temp.startswith(f".big.ome.zarr{TEMP_TAG}") and (out / temp / "0" / ".zarray").is_file()
    assert len(list((out / ".big.unetkit-part").glob("*.strip"))) == 3

    monkeypatch.setattr(zarr_out, "PYRAMID_TOP", TOP)
    predictor = Predictor.from_checkpoint(model_path, CONFIG, "cpu")
    tiles = [0]
    run = predictor.network.run

    def counting(x):
        tiles[0] += int(x.shape[0])
        return run(x)

    predictor.network.run = counting  # type: ignore[method-assign]
    predict_paths(predictor, [reference / "in"], out, zarr=True, **KWARGS)
    assert tiles == [0]  # assembled from the strips alone
    assert _tree(out / "big.ome.zarr") == _tree(reference / "zarr" / "big.ome.zarr")
    assert _temps(out) == [] and not (out / ".big.unetkit-part").exists()


def test_cli_zarr_for_images_read_by_region_only(model_path, tmp_path, capsys, monkeypatch):  # noqa: F811
    """``--zarr`` changes the mask of an image read by region; an image read whole gets its
    PNGs as without it."""
    from PIL import Image

    image = _image(300, 260)
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "big.tif", image)
    Image.fromarray(_image(64, 80, seed=2)).save(tmp_path / "in" / "small.png")
    out = tmp_path / "out"
    argv = ["predict", str(model_path), str(tmp_path / "in"), "-o", str(out), "--no-progress"]
    assert main([*argv, "--level", "0", "--zarr"]) == 0  # --level: TIFFs read by region
    assert "2 predicted, 0 skipped (existing), 0 failed" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert "big.ome.zarr" in names and "big.tif" not in names and "small.png" in names
    assert not any(n.startswith("small") and "zarr" in n for n in names)
    expected = Predictor.from_checkpoint(model_path, PredictConfig(), "cpu").predict_mask(image)
    levels = _levels(out / "big.ome.zarr")
    assert len(levels) == 1  # 300 x 260: under 2048 px, the full level only
    np.testing.assert_array_equal(levels[0], expected)
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["predict", "--help"]) == 0
    help_row = next(r for r in capsys.readouterr().out.splitlines() if "--zarr" in r)
    assert "[default: (off)]" in help_row


def test_a_second_run_replaces_the_zarr_as_a_whole(
    reference,
    model_path,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Run again (not --skip-existing) over an existing zarr (here: with a file of its own):
    the new one replaces it whole, and the old one is not left under a temporary name."""
    import shutil

    monkeypatch.setattr(zarr_out, "PYRAMID_TOP", TOP)
    out = tmp_path / "out"
    shutil.copytree(reference / "zarr" / "big.ome.zarr", out / "big.ome.zarr")
    (out / "big.ome.zarr" / "9").mkdir()
    (out / "big.ome.zarr" / "9" / "stale").write_bytes(b"old")
    predictor = Predictor.from_checkpoint(model_path, CONFIG, "cpu")
    predict_paths(predictor, [reference / "in"], out, zarr=True, **KWARGS)
    assert _tree(out / "big.ome.zarr") == _tree(reference / "zarr" / "big.ome.zarr")
    assert _temps(out) == []
