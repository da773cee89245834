"""Images read by region (``data.largeimage``) and predicted band by band (``infer.large``):
the reader equals numpy indexing, and the tiled BigTIFF mask equals the in-memory prediction
of the same image exactly."""

from __future__ import annotations

import csv
import types

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit import DataConfig, PredictConfig, save_checkpoint
from unetkit.cli import main
from unetkit.data.largeimage import LargeImage, streamable
from unetkit.errors import UnetkitError
from unetkit.infer.outputs import predict_paths
from unetkit.infer.predict import Predictor
from unetkit.infer.tiling import plan_image, reflect_indices

CLASSES = ["background", "a", "b"]
PALETTE = [[0, 0, 0], [200, 0, 0], [0, 0, 200]]


def _image(h: int = 300, w: int = 260, c: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise, with a dark left half (per-image statistics matter)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 80 * np.sin(y / 13.0)[..., None] * np.cos(x / 17.0)[..., None]
    image = base + rng.normal(0, 20, (h, w, c))
    image[:, : w // 2] *= 0.3
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(path, image: np.ndarray, **kwargs) -> None:
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", **kwargs)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, tiny_model, tiny_checkpoint):
    net = tiny_model(None, in_channels=3, out_channels=3)  # the ModelConfig defaults
    pre = DataConfig(channels=3, size=(48, 48), normalize="image")
    folder = tmp_path_factory.mktemp("m")
    path = save_checkpoint(
        tiny_checkpoint(net, classes=CLASSES, palette=PALETTE, preprocessing=pre), folder / "m.pt"
    )
    # random weights favour one class everywhere: centre the head's logits so that every
    # class wins somewhere (a mask worth comparing), context-dependent as a real model is
    probs = Predictor.from_checkpoint(path, PredictConfig(), "cpu").predict_proba(_image())
    median = np.median(np.log(np.maximum(probs, 1e-12)).reshape(3, -1), axis=1)
    with torch.no_grad():
        net.head[0].bias -= torch.as_tensor(median, dtype=torch.float32)
    ckpt = tiny_checkpoint(net, classes=CLASSES, palette=PALETTE, preprocessing=pre)
    return save_checkpoint(ckpt, folder / "m.pt")


@pytest.mark.parametrize("layout", ["YXS", "YX", "CYX"])
def test_read_region_and_strided_equal_numpy_indexing(tmp_path, layout):
    rgb = _image(130, 150)
    stored = {"YXS": rgb, "YX": rgb[:, :, 0], "CYX": np.moveaxis(rgb, -1, 0)}[layout]
    expected = {"YXS": rgb, "YX": rgb[:, :, :1], "CYX": rgb}[layout]
    _write(tmp_path / "a.tif", stored, **({"photometric": "minisblack"} if layout != "YXS" else {}))
    with LargeImage(tmp_path / "a.tif") as image:
        assert image.shape == expected.shape and image.axes in (layout, "QYX")
        rows, cols = reflect_indices(-7, 40, 130), slice(100, 150)
        np.testing.assert_array_equal(image.read_region(rows, cols), expected[rows][:, cols])
        np.testing.assert_array_equal(
            image.read_region(slice(90, 130), reflect_indices(140, 170, 150)),
            expected[90:130][:, reflect_indices(140, 170, 150)],
        )
        for step in (1, 3, 7):
            np.testing.assert_array_equal(
                image.strided(step, band_rows=20), expected[::step, ::step]
            )


def test_streamable_only_for_large_tiled_tiffs(tmp_path):
    _write(tmp_path / "a.tif", _image(130, 150))
    assert streamable(tmp_path / "a.tif", large_pixels=100 * 100)
    assert not streamable(tmp_path / "a.tif")  # small: read whole as before
    assert streamable(tmp_path / "a.tif", level=0)  # a level asked for: by region
    Image.fromarray(_image(130, 150)).save(tmp_path / "a.png")
    assert not streamable(tmp_path / "a.png", large_pixels=1)
    one_strip = tmp_path / "strip.tif"
    tifffile.imwrite(one_strip, np.zeros((5000, 5000), np.uint8), rowsperstrip=5000)
    assert streamable(one_strip, large_pixels=1)  # 25 MB in one strip: still by region
    big_strip = tmp_path / "bigstrip.tif"
    tifffile.imwrite(big_strip, np.zeros((9000, 8000), np.uint8), rowsperstrip=9000)
    assert not streamable(big_strip, large_pixels=1)  # 72 MB strip: not read by region
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    assert not streamable(tmp_path / "junk.tif", large_pixels=1)


def test_a_missing_level_is_one_line(tmp_path):
    _write(tmp_path / "a.tif", _image(64, 64))
    with pytest.raises(UnetkitError, match=r"a\.tif: no pyramid level 2 \(it has levels 0\.\.0\)"):
        LargeImage(tmp_path / "a.tif", level=2)


def test_band_prediction_equals_the_in_memory_prediction(model_path, tmp_path):
    image = _image(300, 260)
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "big.tif", image)
    predictor = Predictor.from_checkpoint(
        model_path, PredictConfig(strategy="tile", tile=(48, 48)), "cpu"
    )
    expected = predictor.predict_mask(image)
    assert len(np.unique(expected)) >= 2  # a mask worth comparing
    out = tmp_path / "out"
    report = predict_paths(
        predictor, [tmp_path / "in"], out, progress=False, large_pixels=200 * 200
    )
    assert [p.name for p in report.written] == ["big.tif"] and not report.failed
    with tifffile.TiffFile(out / "big.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.tilewidth == 256
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        mask = page.asarray()
    np.testing.assert_array_equal(mask, expected)  # exact: same tiles, statistics, blend
    preview = np.asarray(Image.open(out / "big_preview.png"))
    assert preview.shape == (300, 260, 3)  # under 2048 px: every pixel
    assert not (out / "big_overlay.png").exists() and not (out / "big.png").exists()
    with open(out / "summary.csv", newline="") as f:
        row = next(csv.DictReader(f))
    counts = np.bincount(expected.ravel(), minlength=3)
    assert [int(row[f"{c}_pixels"]) for c in CLASSES] == counts.tolist()
    assert (int(row["height"]), int(row["width"])) == (300, 260)
    # a second run with --skip-existing reads the counts back from the TIFF
    again = predict_paths(
        predictor, [tmp_path / "in"], out, progress=False, large_pixels=200 * 200,
        skip_existing=True,
    )  # fmt: skip
    assert [p.name for p in again.skipped] == ["big.tif"] and again.rows == report.rows


def test_cli_predicts_a_pyramid_level(model_path, tmp_path, caplog):
    full = _image(256, 320)
    half = full[::2, ::2].copy()
    path = tmp_path / "pyr.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(full, tile=(64, 64), subifds=1, compression="zlib")
        tif.write(half, tile=(64, 64), subfiletype=1, compression="zlib")
    with LargeImage(path, level=1) as image:
        assert image.shape == half.shape and image.level_shapes[1][:2] == half.shape[:2]
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(path), "-o", str(out), "--level", "1"]) == 0
    predictor = Predictor.from_checkpoint(model_path, PredictConfig(), "cpu")
    np.testing.assert_array_equal(tifffile.imread(out / "pyr.tif"), predictor.predict_mask(half))
    caplog.clear()
    assert main(["predict", str(model_path), str(path), "-o", str(out), "--level", "5"]) == 2
    said = [r.getMessage() for r in caplog.records if "pyr.tif" in r.getMessage()]
    assert len(said) == 1 and "no pyramid level 5 (it has levels 0..1)" in said[0]


def test_strided_keeps_no_band_alive(tmp_path):
    """A 40000 px slide peaked at 6.3 GiB: ``strided`` kept views into every full-width band
    of rows it read, so the whole image stayed in memory. Its parts must own their data."""
    import gc
    import weakref

    _write(tmp_path / "a.tif", _image(200, 150))
    with LargeImage(tmp_path / "a.tif") as image:
        bands: list = []
        alive: list[int] = []
        real = image.rows

        def rows(r0, r1):
            gc.collect()
            alive.append(sum(ref() is not None for ref in bands))  # earlier bands still held
            band = real(r0, r1)
            bands.append(weakref.ref(band))
            return band

        image.rows = rows  # type: ignore[method-assign]
        grid = image.strided(4, band_rows=40)
    assert len(bands) == 5 and grid.shape == (50, 38, 3)
    assert alive == [0, 0, 0, 0, 0]  # each band is let go once subsampled


# -- parts of an image: resume and shards rest on these ------------------------------------------
@pytest.mark.parametrize("cut", [(0, 300), (1, 299), (47, 130), (130, 131), (256, 300), (299, 300)])
def test_a_row_range_is_exactly_those_rows_of_the_whole_prediction(model_path, tmp_path, cut):
    image = _image(300, 260)
    _write(tmp_path / "a.tif", image)
    predictor = Predictor.from_checkpoint(
        model_path, PredictConfig(strategy="tile", tile=(48, 48)), "cpu"
    )
    expected = predictor.predict_mask(image)
    with LargeImage(tmp_path / "a.tif") as region:
        bands = list(predictor.iter_mask_bands(region, cut))
    assert bands[0][0] == cut[0] and bands[-1][1] == cut[1]
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))  # contiguous, in order
    got = np.concatenate([mask for _, _, mask in bands])
    np.testing.assert_array_equal(got, expected[cut[0] : cut[1]])


def _count_tiles(predictor: Predictor) -> list[int]:
    """Count the tiles the network sees (a list of one int, updated in place)."""
    seen = [0]
    run = predictor.network.run

    def counting(x):
        seen[0] += int(x.shape[0])
        return run(x)

    predictor.network.run = counting
    return seen


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_interrupted_slide_resumes_from_its_last_written_strip(
    model_path, tmp_path, monkeypatch
):
    """Strips of 256 rows (3 here) go to ``.big.unetkit-part/`` as they are finished; a run
    stopped after the first is started again with the same call and predicts only the rest;
    the files are identical, byte for byte, to those of an uninterrupted run."""
    from unetkit.infer.strips import Strips

    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "big.tif", _image(600, 200))
    config = PredictConfig(strategy="tile", tile=(48, 48), precision="fp32")
    kwargs = {"progress": False, "large_pixels": 100 * 100}
    whole = Predictor.from_checkpoint(model_path, config, "cpu")
    whole_tiles = _count_tiles(whole)
    predict_paths(whole, [tmp_path / "in"], tmp_path / "whole", **kwargs)

    real_write = Strips.write
    written: list[int] = []

    def write_then_stop(self, index, tiles):
        if written:
            raise KeyboardInterrupt  # as Ctrl-C after the first strip was written
        real_write(self, index, tiles)
        written.append(index)

    monkeypatch.setattr(Strips, "write", write_then_stop)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_paths(
            Predictor.from_checkpoint(model_path, config, "cpu"), [tmp_path / "in"], out, **kwargs
        )
    part = out / ".big.unetkit-part"
    assert written == [0] and sorted(p.name for p in part.iterdir()) == ["000000.strip", "job.json"]
    assert not (out / "big.tif").exists()
    monkeypatch.setattr(Strips, "write", real_write)

    again = Predictor.from_checkpoint(model_path, config, "cpu")
    again_tiles = _count_tiles(again)
    report = predict_paths(again, [tmp_path / "in"], out, **kwargs)
    assert [p.name for p in report.written] == ["big.tif"]
    assert _files(out) == _files(tmp_path / "whole")  # big.tif, big_preview.png, summary.csv
    assert not part.exists()
    # resumed, not started over: only the tile rows that touch rows 256.. ran again
    assert 0 < again_tiles[0] < 0.7 * whole_tiles[0], (again_tiles, whole_tiles)


def test_strips_of_another_job_are_not_reused(model_path, tmp_path, monkeypatch):
    """A part folder left by a run with other settings (here: the overlap) is removed and the
    image predicted from the start."""
    from unetkit.infer.strips import Strips

    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "big.tif", _image(300, 120))
    kwargs = {"progress": False, "large_pixels": 100 * 100}

    def stop(self, index, tiles):
        raise KeyboardInterrupt

    first = Predictor.from_checkpoint(
        model_path, PredictConfig(strategy="tile", tile=(48, 48)), "cpu"
    )
    real_write = Strips.write
    monkeypatch.setattr(Strips, "write", lambda s, i, t: (real_write(s, i, t), stop(s, i, t)))
    with pytest.raises(KeyboardInterrupt):
        predict_paths(first, [tmp_path / "in"], tmp_path / "out", **kwargs)
    assert (tmp_path / "out" / ".big.unetkit-part" / "000000.strip").is_file()
    monkeypatch.setattr(Strips, "write", real_write)
    other = PredictConfig(strategy="tile", tile=(48, 48), overlap=0.5)
    for out in ("out", "fresh"):
        predictor = Predictor.from_checkpoint(model_path, other, "cpu")
        predict_paths(predictor, [tmp_path / "in"], tmp_path / out, **kwargs)
    assert _files(tmp_path / "out") == _files(tmp_path / "fresh")


# -- background ---------------------------------------------------------------------------------
def test_background_is_the_far_side_of_an_otsu_threshold():
    from unetkit.infer.background import Background

    grid = np.full((40, 50, 3), 240, np.uint8)
    grid[10:20, 5:15] = 60  # dark tissue on bright glass
    bright = Background(grid, 4, "bright")
    assert bright.foreground is not None and bright.foreground.sum() == 100
    assert not bright(slice(40, 80), slice(20, 60))  # touches grid pixel (10, 5..14)
    assert bright(slice(120, 160), slice(120, 160))  # far from it
    assert not bright(np.array([83, 82, 81, 80]), slice(60, 64))  # grid (20, 15): 1 away
    assert bright(np.arange(84, 100), slice(0, 16))  # rows 21..24 of the grid: 2 away
    dark = Background(grid, 4, "dark")
    assert dark.foreground is not None and dark.foreground.sum() == 40 * 50 - 100
    flat = Background(np.full((8, 8, 1), 7, np.uint8), 1, "bright")
    assert flat.foreground is None and not flat(slice(0, 8), slice(0, 8))  # no contrast: no skip
    assert (bright.tiles, bright.skipped) == (4, 2)


def test_skip_background_runs_no_tile_on_empty_glass(model_path, tmp_path):
    """Left: structure; right: blank white glass. The tiles over glass alone are not run and
    are class 0; every pixel that only computed tiles cover is as without skipping."""
    image = _image(200, 400)
    image[:, :150] = np.clip(image[:, :150].astype(int) + 40, 0, 200)  # no dark left half
    image[:, 200:] = 255
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "slide.tif", image)
    config = PredictConfig(strategy="tile", tile=(48, 48), precision="fp32")
    kwargs = {"progress": False, "large_pixels": 100 * 100}
    masks, tiles = {}, {}
    for skip in (None, "bright"):
        predictor = Predictor.from_checkpoint(model_path, config, "cpu")
        seen = _count_tiles(predictor)
        out = tmp_path / str(skip)
        predict_paths(predictor, [tmp_path / "in"], out, background=skip, **kwargs)
        masks[skip], tiles[skip] = tifffile.imread(out / "slide.tif"), seen[0]
    assert 0 < tiles["bright"] < 0.75 * tiles[None], tiles
    tile = 48  # the training size: the tile, context included
    np.testing.assert_array_equal(masks["bright"][:, : 200 - tile], masks[None][:, : 200 - tile])
    assert (masks["bright"][:, 200 + 2 * tile :] == 0).all()
    assert (masks[None][:, 200 + 2 * tile :] != 0).any()  # skipping made a difference there


def test_skip_background_must_be_bright_or_dark(model_path, tmp_path, capsys):
    _write(tmp_path / "a.tif", _image(64, 64))
    argv = ["predict", str(model_path), str(tmp_path / "a.tif"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--skip-background", "grey"]) == 2
    assert "background must be one of bright, dark; got 'grey'" in capsys.readouterr().err


@pytest.mark.parametrize("padding", ["valid", "zeros"])
def test_row_ranges_assemble_the_whole_run_for_both_tilings(padding, tiny_model):
    """Overlap-tile (valid padding, abutting tiles) and blended tiles (same padding): any cut
    of the rows into ranges gives the whole run's rows, bit for bit."""
    from unetkit.infer.tiling import SizeRule, iter_bands, plan_image

    net = tiny_model(None, in_channels=3, out_channels=3, padding=padding, seed=1)
    rule = SizeRule.from_model(net)
    image = torch.as_tensor(_image(150, 90)).permute(2, 0, 1).float() / 255
    plans = plan_image((150, 90), (44, 44), 0.25, rule)
    assert len(plans[0].windows) > 4
    with torch.inference_mode():
        whole = torch.cat([b for _, _, b in iter_bands(net, image, plans)], dim=1)
        for cuts in ([0, 37, 38, 90, 150], [0, 1, 149, 150]):
            parts = [
                b
                for r0, r1 in zip(cuts, cuts[1:])
                for _, _, b in iter_bands(net, image, plans, row_range=(r0, r1))
            ]
            assert torch.equal(torch.cat(parts, dim=1), whole), cuts


def test_each_row_of_tiff_tiles_is_decoded_once_per_prediction(model_path, tmp_path):
    """Network windows overlap by their context; the rows of TIFF tiles under one window are
    kept for the next, so the file is decoded once (plus the statistics / preview passes),
    not once per window that touches it. Equal to the in-memory prediction all the same."""
    image = _image(300, 260)
    _write(tmp_path / "big.tif", image)  # 64 x 64 TIFF tiles
    predictor = Predictor.from_checkpoint(
        model_path, PredictConfig(strategy="tile", tile=(48, 48)), "cpu"
    )
    decoded = []
    real = LargeImage.rows

    def rows(self, r0, r1):
        decoded.append((r0, r1))
        return real(self, r0, r1)

    plans = plan_image((300, 260), predictor._tile(), 0.0, predictor.rule)
    assert len(plans[0].windows) > 5  # many overlapping rows of network tiles
    with LargeImage(tmp_path / "big.tif") as region:
        region.rows = types.MethodType(rows, region)  # type: ignore[method-assign]
        got = np.concatenate([band for _, _, band in predictor.iter_mask_bands(region)])
    np.testing.assert_array_equal(got, predictor.predict_mask(image))
    band_reads = [r for r in decoded if r[1] - r[0] <= 64]  # the windows' reads (not strided)
    assert sorted(set(band_reads)) == sorted(band_reads)  # no rows of tiles decoded twice
    assert sum(r1 - r0 for r0, r1 in band_reads) == 300


def test_strided_many_reads_the_file_once_for_every_grid(tmp_path):
    """A slide's preview and its normalisation statistics come from one pass."""
    expected = _image(200, 150)
    _write(tmp_path / "a.tif", expected)
    with LargeImage(tmp_path / "a.tif") as image:
        calls = []
        real = image.rows

        def rows(r0, r1):
            calls.append((r0, r1))
            return real(r0, r1)

        image.rows = rows  # type: ignore[method-assign]
        grids = image.strided_many([4, 3], band_rows=40)
        assert [g.shape[:2] for g in grids] == [(67, 50), (50, 38)]  # sorted steps: 3, 4
        read = sum(r1 - r0 for r0, r1 in calls)
        np.testing.assert_array_equal(image.strided(4), expected[::4, ::4])  # kept: no read
        np.testing.assert_array_equal(image.strided(3), expected[::3, ::3])
        assert sum(r1 - r0 for r0, r1 in calls) == read == 200  # every row decoded once
