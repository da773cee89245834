"""What unetkit writes for TIFF inputs reads back in other tools' readers: the pixel size
(tifffile's resolution tags, OME-Zarr ``scale`` + unit, PNG pHYs), the outputs of
``NAME.ome.tif`` named from ``NAME``, the TIFF mask's pyramid levels (SubIFDs), and the
OME-Zarr label's ``source``, as ``ome_zarr``'s reader and ome-zarr-models see them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
from PIL import Image
from test_largeimage import _image, _write, model_path  # noqa: F401

from unetkit.cli import main
from unetkit.data.largeimage import PixelSize, output_stem, pixel_size_of
from unetkit.infer import zarr_out

ARGV = ["--no-progress"]


def _resolution_um(page) -> tuple[float, float]:
    """A TIFF page's pixel size in micrometres, from its tags (as Bio-Formats reads them)."""
    assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
    x, y = page.resolution
    return 1e4 / x, 1e4 / y


# -- reading ------------------------------------------------------------------------------------
def test_pixel_size_is_read_from_ome_imagej_and_resolution_tags(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", image)  # resolution 1, unit none
    tifffile.imwrite(
        tmp_path / "cm.tif", image, resolution=(20000, 20000), resolutionunit="CENTIMETER"
    )
    tifffile.imwrite(tmp_path / "inch.tif", image, resolution=(50800, 25400), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "editor.tif", image, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(
        tmp_path / "ij.tif", image, imagej=True, resolution=(4, 4), metadata={"unit": "micron"}
    )
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        image,
        metadata={"PhysicalSizeX": 325, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 325,
                  "PhysicalSizeYUnit": "nm"},
    )  # fmt: skip
    Image.fromarray(image).save(tmp_path / "a.png")
    assert pixel_size_of(tmp_path / "plain.tif") is None
    assert pixel_size_of(tmp_path / "editor.tif") is None  # 72 dpi: an image editor's
    assert pixel_size_of(tmp_path / "a.png") is None
    assert pixel_size_of(tmp_path / "cm.tif") == PixelSize(0.5, 0.5, "um")
    assert pixel_size_of(tmp_path / "inch.tif") == PixelSize(0.5, 1.0, "um")
    assert pixel_size_of(tmp_path / "ij.tif") == PixelSize(0.25, 0.25, "um")
    assert pixel_size_of(tmp_path / "a.ome.tif") == PixelSize(325, 325, "nm")


def test_output_stem_drops_ome():
    assert output_stem("d/NAME.ome.tif") == "NAME" == output_stem("NAME.OME.TIFF")
    assert output_stem("NAME.tif") == "NAME" == output_stem("NAME.png")
    assert output_stem("a.b.tif") == "a.b"


# -- images read by region ------------------------------------------------------------------------
@pytest.fixture
def slide(tmp_path):
    """A 300 x 260 TIFF with a 0.5 um pixel in OME-XML, named like an OME-TIFF."""
    path = tmp_path / "in" / "big.ome.tif"
    path.parent.mkdir()
    tifffile.imwrite(
        path, _image(300, 260), tile=(64, 64), compression="zlib",
        metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
    )  # fmt: skip
    return path


def test_region_mask_tiff_keeps_the_pixel_size_and_has_pyramid_levels(
    model_path,  # noqa: F811
    slide,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setattr(zarr_out, "PYRAMID_TOP", 64)  # 300 x 260 -> 150, 75, 38: 4 levels
    out = tmp_path / "out"
    assert (
        main(["predict", str(model_path), str(slide), "-o", str(out), "--level", "0", *ARGV]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["big.tif", "big_preview.png", "summary.csv"]
    with tifffile.TiffFile(out / "big.tif") as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(300, 260), (150, 130), (75, 65), (38, 33)]
        full = levels[0].asarray()
        for k, level in enumerate(levels):
            np.testing.assert_array_equal(level.asarray(), full[:: 2**k, :: 2**k])
            page = level.keyframe
            assert page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.PALETTE
            np.testing.assert_allclose(_resolution_um(page), [0.5 * 2**k] * 2, rtol=1e-9)
    assert pixel_size_of(out / "big.tif") == pytest.approx(PixelSize(0.5, 0.5))


def test_pixel_size_option_with_zarr_and_level_is_metadata_not_objects(
    model_path,  # noqa: F811
    slide,
    tmp_path,
):
    """``--pixel-size 0.5 --zarr --level 0`` failed: the pixel size implied objects."""
    out = tmp_path / "out"
    argv = ["predict", str(model_path), str(slide), "-o", str(out), "--level", "0", *ARGV]
    assert main([*argv, "--zarr", "--pixel-size", "250", "--pixel-unit", "nm"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "big.ome.zarr", "big_preview.png", "summary.csv",
    ]  # fmt: skip
    attrs = json.loads((out / "big.ome.zarr" / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert [a["unit"] for a in multiscale["axes"]] == ["nanometer", "nanometer"]
    assert multiscale["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [250.0, 250.0]}
    ]
    assert attrs["image-label"]["source"] == {"image": "../../"}
    import zarr
    from ome_zarr_models.v04 import ImageLabel

    ImageLabel.from_zarr(zarr.open_group(str(out / "big.ome.zarr"), mode="r"))


def test_objects_of_a_pyramid_level_that_fits_are_predicted_from_it_whole(
    model_path,  # noqa: F811
    tmp_path,
    caplog,
):
    """``--level 1 --objects``: the level fits in memory, so it is read whole and gets every
    object output, equal to predicting that level saved as an image of its own; a level that
    does not fit is refused naming the levels that would."""
    from unetkit.infer.outputs import predict_paths
    from unetkit.infer.predict import Predictor

    path = tmp_path / "pyr.tif"
    full = _image(256, 320)
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, tile=(64, 64), subifds=1)
        tif.write(full[::2, ::2].copy(), tile=(64, 64), subfiletype=1)
    Image.fromarray(full[::2, ::2]).save(tmp_path / "level1.png")
    out, alone = tmp_path / "out", tmp_path / "alone"
    argv = ["predict", str(model_path), str(path), "-o", str(out), "--level", "1", *ARGV]
    assert main([*argv, "--objects"]) == 0
    assert main(["predict", str(model_path), str(tmp_path / "level1.png"), "-o", str(alone),
                 "--objects", *ARGV]) == 0  # fmt: skip
    for suffix in (".png", "_instances.png"):
        a, b = out / f"pyr{suffix}", alone / f"level1{suffix}"
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert np.asarray(Image.open(out / "pyr.png")).shape == (128, 160)
    rows = (out / "pyr_objects.csv").read_text()
    assert rows == (alone / "level1_objects.csv").read_text() and len(rows.splitlines()) > 1
    predictor = Predictor.load(model_path)
    report = predict_paths(predictor, [path], tmp_path / "small", level=1, objects=True,
                           large_pixels=100, progress=False)  # fmt: skip
    assert len(report.failed) == 1
    said = report.failed[0][1]
    assert "level 1 (128 x 160 px) is read by region" in said
    assert "no level of it fits in memory" in said


def test_whole_ome_tiff_outputs_are_named_from_name_and_carry_the_pixel_size(
    model_path,  # noqa: F811
    tmp_path,
):
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, _image(64, 80), metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(path), "-o", str(out), *ARGV]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cells.png", "cells_color.png", "cells_overlay.png", "summary.csv"]
    with Image.open(out / "cells.png") as png:
        assert png.info["dpi"] == pytest.approx((25400 / 0.5,) * 2, rel=1e-6)


def test_two_inputs_differing_only_in_ome_collide(model_path, tmp_path):  # noqa: F811
    (tmp_path / "in").mkdir()
    for name in ("a.ome.tif", "a.tif"):
        tifffile.imwrite(tmp_path / "in" / name, _image(32, 32))
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(tmp_path / "in"), "-o", str(out), *ARGV]) == 2


# -- OME-Zarr labels inside a slide's OME-Zarr ------------------------------------------------
def test_ome_zarr_finds_the_parent_image_of_a_label_in_labels(
    model_path,  # noqa: F811
    slide,
    tmp_path,
    caplog,
):
    """README's layout: the label image in ``SLIDE.ome.zarr/labels/NAME``, NGFF 0.4."""
    import shutil

    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.writer import write_image

    out = tmp_path / "out"
    argv = ["predict", str(model_path), str(slide), "-o", str(out), "--level", "0", "--zarr"]
    assert main([*argv, *ARGV]) == 0
    root = tmp_path / "slide.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    write_image(np.moveaxis(_image(300, 260), -1, 0), group, axes="cyx", scaler=None)
    shutil.copytree(out / "big.ome.zarr", root / "labels" / "big")
    labels = zarr.open_group(str(root / "labels"), mode="a", zarr_format=2)
    labels.attrs["labels"] = ["big"]
    caplog.set_level(logging.WARNING, logger="ome_zarr")
    nodes = list(Reader(parse_url(str(root / "labels" / "big")))())
    assert not [r for r in caplog.records if "no parent found" in r.getMessage()]
    assert any(
        "slide.ome.zarr" in str(node.zarr) and "labels" not in str(node.zarr) for node in nodes
    )


@pytest.mark.parametrize("fmt", [2, 3])
def test_write_slide_label_into_ngff_04_and_05_slides(tmp_path, fmt, caplog):
    """The label inside the slide's own OME-Zarr, in its format: valid for ome-zarr-models'
    image model of that NGFF version (label levels as many as the image's), and ome_zarr's
    reader finds the parent image."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.writer import write_image

    from unetkit.infer.zarr_out import write_slide_label

    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (300, 261)).astype(np.uint8)
    root = tmp_path / "slide.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=fmt)
    write_image(
        rng.integers(0, 255, (2, 300, 261)).astype(np.uint8), group, axes="cyx",
        scale_factors=(2, 4), fmt=FormatV04() if fmt == 2 else FormatV05(),
    )  # fmt: skip
    bands = (mask[y : y + 100] for y in range(0, 300, 100))
    target = write_slide_label(
        root, "cells", bands, mask.shape, [[0, 0, 0], [255, 0, 0]], ["bg", "a", "b"]
    )
    assert target == root / "labels" / "cells"
    slide = zarr.open_group(str(root), mode="r")
    attrs = slide.attrs.asdict()
    datasets = (attrs["ome"] if fmt == 3 else attrs)["multiscales"][0]["datasets"]
    shapes = [slide[d["path"]].shape[1:] for d in datasets]
    assert len(shapes) == 3
    for k, shape in enumerate(shapes):
        level = np.asarray(zarr.open_array(str(target / str(k)), mode="r")[:])
        assert level.shape == shape
        np.testing.assert_array_equal(level, mask[:: 2**k, :: 2**k][: shape[0], : shape[1]])
    if fmt == 2:
        from ome_zarr_models.v04 import Image
    else:
        from ome_zarr_models.v05 import Image
    image = Image.from_zarr(slide)
    assert image.labels is not None
    caplog.set_level(logging.WARNING, logger="ome_zarr")
    nodes = list(Reader(parse_url(str(target)))())
    assert not [r for r in caplog.records if "no parent found" in r.getMessage()]
    assert len(nodes) >= 2  # the label and its parent image


@pytest.mark.parametrize("mask_kind", ["zarr", "tif"])
def test_add_label_puts_a_predicted_mask_into_an_ngff_05_slide(
    model_path,  # noqa: F811
    slide,
    tmp_path,
    mask_kind,
):
    """``unetkit add-label`` writes ``predict``'s mask (OME-Zarr or BigTIFF) into the slide's
    own NGFF 0.5 / Zarr v3 OME-Zarr: valid for ome-zarr-models, every level the mask's."""
    import tifffile
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image
    from ome_zarr_models.v05 import Image as Image05

    out = tmp_path / "out"
    argv = ["predict", str(model_path), str(slide), "-o", str(out), "--level", "0"]
    assert main([*argv, *(["--zarr"] if mask_kind == "zarr" else []), *ARGV]) == 0
    with tifffile.TiffFile(slide) as tif:
        pixels = tif.series[0].asarray()
    root = tmp_path / "slide.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=3)
    write_image(np.moveaxis(pixels, -1, 0), group, axes="cyx", scale_factors=(2,),
                fmt=FormatV05())  # fmt: skip
    mask_path = out / ("big.ome.zarr" if mask_kind == "zarr" else "big.tif")
    assert main(["add-label", str(mask_path), str(root)]) == 0
    if mask_kind == "tif":
        mask = tifffile.imread(out / "big.tif")
    else:
        mask = np.asarray(zarr.open_array(str(out / "big.ome.zarr" / "0"), mode="r")[:])
    assert mask.shape == (300, 260) and mask.any()
    label = zarr.open_group(str(root / "labels" / "big"), mode="r")
    np.testing.assert_array_equal(np.asarray(label["0"][:]), mask)
    np.testing.assert_array_equal(np.asarray(label["1"][:]), mask[::2, ::2])
    assert Image05.from_zarr(zarr.open_group(str(root), mode="r")).labels is not None
    attrs = label.attrs.asdict()["ome"]["image-label"]
    assert attrs["source"] == {"image": "../../"} and len(attrs["colors"]) >= 2
    assert main(["add-label", str(tmp_path / "nothing.ome.zarr"), str(root)]) == 2
