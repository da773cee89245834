"""The mask of an image read by region as OME-Zarr: an OME-NGFF 0.4 multiscale label image.

``predict --zarr`` (``unetkit.infer.large``) writes ``NAME.ome.zarr`` instead of ``NAME.tif``.
It is Zarr format 2 (the format OME-NGFF 0.4 is written in, which every OME-Zarr reader reads),
and it is the label image itself, the group an image's ``labels/`` folder would hold::

    NAME.ome.zarr/
        .zgroup
        .zattrs     "multiscales": version 0.4, axes y and x (type "space"; with a pixel
                    size, their "unit", e.g. "micrometer"), one dataset per level with its
                    "scale" (1, 2, 4, ... times the pixel size); "image-label": the model's
                    palette as "colors", the class names as "properties" ("class") and
                    "source" {"image": "../../"} (the image of a label in its labels/ group)
        0/          the class indices (H, W) at the size predicted: uint8 (uint16 beyond
                    256 classes, which ``predict`` does not read by region)
        1/          mask[::2, ::2]: every 2nd pixel of every 2nd row, from pixel (0, 0)
        2/ ...      mask[::4, ::4], ... until the longer side is <= ``PYRAMID_TOP`` (2048) px

Every level is chunked ``CHUNK`` x ``CHUNK`` (256; chunk keys ``ROW/COL``: dimension separator
"/") and compressed (Blosc zstd; zlib where numcodecs has no Blosc); a chunk of class 0 only
(the fill value) is not stored, as Zarr allows. The down-sampled levels pick pixels, they do not
average: every value is a class of the full mask. To show it over the slide's own OME-Zarr,
put it in ``SLIDE.ome.zarr/labels/NAME/`` and list ``NAME`` in ``labels/.zattrs`` (the spec
asks for as many levels as the image has), or let ``write_slide_label`` do it.

**Into a slide's own OME-Zarr** (``write_slide_label``): the label image is written as
``SLIDE.ome.zarr/labels/NAME/`` in the slide's own format (OME-NGFF 0.4 in Zarr v2, or 0.5 in
Zarr v3: attributes under ``"ome"`` in ``zarr.json``, arrays with ``dimension_names``), with as
many levels as the slide's multiscale image, level ``k`` picking every ``f``-th pixel where
``f`` is the ratio of the slide's level-0 and level-``k`` heights (cropped to that level's
size), and each level's ``scale`` the slide's y / x scale; ``NAME`` is added to ``labels``.

**Written band by band** (``write_label_zarr``): the mask arrives as bands of rows, in order,
and each level keeps at most one row of chunks plus one band's rows (subsampled) until a row of
chunks is complete, so every chunk is written once and the mask is never whole in memory.
**Atomically**: into a temporary folder ``.NAME.ome.zarr.unetkit-tmp-XXXXXXXX/`` beside it
(``unetkit.files.atomic_dir``), renamed onto ``NAME.ome.zarr`` at the end; the temporary folder a
killed write left is removed before the next write of the same mask
(``unetkit.files.remove_temp_dirs``), and by ``predict`` once its outputs are in place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..data.largeimage import PixelSize
from ..errors import UnetkitError
from ..files import atomic_dir, remove_temp_dirs

SUFFIX = ".ome.zarr"
NGFF_VERSION = "0.4"
CHUNK = 256
PYRAMID_TOP = 2048  # levels are added until the longer side is at most this


def level_shapes(size: tuple[int, int], top: int | None = None) -> list[tuple[int, int]]:
    """The (H, W) of every level: level ``k`` is every ``2**k``-th pixel of ``size``, levels
    added until the longer side is <= ``top`` (default ``PYRAMID_TOP``)."""
    top = PYRAMID_TOP if top is None else top
    if top < 1:
        raise ValueError(f"the top level's size must be >= 1; got {top}")
    height, width = size
    shapes = [(height, width)]
    while max(shapes[-1]) > top:
        factor = 2 ** len(shapes)
        shapes.append((-(-height // factor), -(-width // factor)))
    return shapes


def label_attributes(
    name: str,
    levels: int,
    palette: list[list[int]],
    classes: list[str],
    pixel_size: PixelSize | None = None,
) -> dict[str, Any]:
    """The group's OME-NGFF 0.4 attributes: ``multiscales`` and ``image-label``."""
    x, y = (pixel_size.x, pixel_size.y) if pixel_size is not None else (1.0, 1.0)
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(y * 2**k), float(x * 2**k)]}
            ],
        }
        for k in range(levels)
    ]
    axes: list[dict[str, str]] = [{"name": a, "type": "space"} for a in "yx"]
    if pixel_size is not None:
        axes = [{**axis, "unit": pixel_size.ngff_unit} for axis in axes]
    # a colour for every class (grey where the palette has none): NGFF 0.5 readers want the
    # same label values in "colors" and "properties"
    colours = [
        {
            "label-value": i,
            "rgba": [*(int(c) for c in (palette[i] if i < len(palette) else [128] * 3)[:3]), 255],
        }
        for i in range(len(classes) if classes else len(palette))
    ]
    label: dict[str, Any] = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    if colours:  # the schema wants at least one
        label["colors"] = colours
    if classes:
        label["properties"] = [{"label-value": i, "class": c} for i, c in enumerate(classes)]
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": axes,
                "datasets": datasets,
                "type": "subsample",
                "metadata": {
                    "description": "level k is level 0's every 2**k-th pixel from (0, 0): "
                    "mask[::2**k, ::2**k], no averaging",
                },
            }
        ],
        "image-label": label,
    }


def _compressor() -> Any:
    try:
        from numcodecs import Blosc
    except ImportError:  # a numcodecs built without Blosc
        from numcodecs import Zlib

        return Zlib(level=6)
    return Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)


class _Level:
    """One level being written: it takes the full mask's bands in order, keeps its own rows
    of them and writes whole rows of chunks (the last one as it is)."""

    def __init__(self, array: Any, factor: int):
        self.array, self.factor = array, factor
        self.pending: list[np.ndarray] = []
        self.held = 0  # rows in pending
        self.written = 0  # rows of this level written

    def add(self, band: np.ndarray, y0: int) -> None:
        """The full mask's rows ``y0 ..`` (``band``); this level keeps rows and columns that
        are multiples of its factor (within its shape)."""
        room = self.array.shape[0] - self.written - self.held
        rows = band[(-y0) % self.factor :: self.factor, :: self.factor]
        rows = rows[: max(room, 0), : self.array.shape[1]]
        if self.factor > 1:
            rows = rows.copy()  # not a view: the band it came from is let go
        if len(rows):
            self.pending.append(rows)
            self.held += len(rows)
        if self.held >= CHUNK:
            self._write(self.held // CHUNK * CHUNK)

    def finish(self) -> None:
        if self.held:
            self._write(self.held)
        if self.written != self.array.shape[0]:
            raise ValueError(f"level {self.array.shape}: {self.written} rows were written")

    def _write(self, count: int) -> None:
        rows = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.array[self.written : self.written + count, :] = rows[:count]
        self.written += count
        rest = rows[count:].copy()
        self.pending, self.held = ([rest] if len(rest) else []), len(rest)


def write_label_zarr(
    path: str | os.PathLike,
    bands: Iterable[np.ndarray],
    size: tuple[int, int],
    palette: list[list[int]],
    classes: list[str],
    *,
    name: str | None = None,
    top: int | None = None,
    pixel_size: PixelSize | None = None,
) -> None:
    """Write a class mask, given as bands of rows, as the OME-Zarr label image ``path``
    (module docstring), atomically.

    Args:
        path: ``NAME.ome.zarr``; an existing one is replaced once the new one is complete.
        bands: the mask's rows from row 0 down, in bands of any heights (class indices,
            (rows, W)), read once, one at a time.
        size: the mask's (H, W).
        palette: RGB per class (the ``image-label`` colours).
        classes: the class names.
        name: the ``multiscales`` name (default: ``NAME``).
        top: add levels until the longer side is at most this (default ``PYRAMID_TOP``).
        pixel_size: the size of a level-0 pixel (the levels' ``scale`` and the axes' unit).

    Raises:
        ValueError: the bands are not ``size``.
    """
    import zarr
    from zarr.storage import LocalStore

    path = Path(path)
    shapes = level_shapes(size, top)
    name = name if name is not None else path.name.removesuffix(SUFFIX)
    dtype = np.uint8 if len(classes) <= 256 else np.uint16
    remove_temp_dirs(path)  # a killed write's, before this one doubles the space
    with atomic_dir(path, overwrite=True) as tmp:
        attributes = label_attributes(name, len(shapes), palette, classes, pixel_size)
        group = zarr.create_group(LocalStore(tmp), zarr_format=2, attributes=attributes)
        levels = [
            _Level(
                group.create_array(
                    str(k),
                    shape=shape,
                    dtype=dtype,
                    chunks=(CHUNK, CHUNK),
                    compressor=_compressor(),
                    filters=None,
                    fill_value=0,
                    order="C",
                    chunk_key_encoding={"name": "v2", "separator": "/"},
                ),
                2**k,
            )
            for k, shape in enumerate(shapes)
        ]
        _write_bands(bands, size, levels)


def open_mask(path: str | os.PathLike, level: int = 0) -> Any:
    """A level of a label image written by ``write_label_zarr``, read-only (a zarr array:
    ``.shape``, ``[r0:r1]``)."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=2)
    return group[str(level)]


def write_slide_label(
    slide: str | os.PathLike,
    name: str,
    bands: Iterable[np.ndarray],
    size: tuple[int, int],
    palette: list[list[int]],
    classes: list[str],
) -> Path:
    """Write a class mask, given as bands of rows, as the label image ``labels/NAME`` of the
    slide's own OME-Zarr (module docstring), atomically, and list it in ``labels``.

    Args:
        slide: the slide's OME-Zarr image (NGFF 0.4 / Zarr v2 or 0.5 / Zarr v3).
        name: the label image's name (an existing one is replaced).
        bands, size, palette, classes: as ``write_label_zarr``; ``size`` must be the (H, W)
            of the slide's level 0.

    Returns:
        The label image's folder.

    Raises:
        UnetkitError: not an OME-Zarr multiscale image, or one of another size.
    """
    import zarr
    from zarr.storage import LocalStore

    root = Path(slide)
    try:
        group = zarr.open_group(str(root), mode="r")
        fmt: Any = group.metadata.zarr_format
        attrs: Any = group.attrs.asdict()
        ome = attrs["ome"] if fmt == 3 else attrs
        multiscale = ome["multiscales"][0]
        axes = [a["name"] if isinstance(a, dict) else a for a in multiscale["axes"]]
        iy, ix = axes.index("y"), axes.index("x")
        datasets = multiscale["datasets"]
        shapes = [tuple(int(n) for n in cast(Any, group[d["path"]]).shape) for d in datasets]
        scales = [
            next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
            for d in datasets
        ]
    except Exception as exc:  # noqa: BLE001 - zarr and the metadata fail in many ways
        raise UnetkitError(f"{root}: not an OME-Zarr multiscale image ({exc!r})") from None
    if (shapes[0][iy], shapes[0][ix]) != tuple(size):
        raise UnetkitError(
            f"{root}: its level 0 is {shapes[0][iy]} x {shapes[0][ix]}, the mask {size[0]} x "
            f"{size[1]}; predict the slide's full resolution (--level 0)"
        )
    version = "0.5" if fmt == 3 else "0.4"
    factors = [max(1, round(shapes[0][iy] / s[iy])) for s in shapes]
    level_sizes = [(s[iy], s[ix]) for s in shapes]
    space = [dict(multiscale["axes"][i]) for i in (iy, ix)]
    attributes = label_attributes(name, len(shapes), palette, classes)
    for dataset, scale in zip(attributes["multiscales"][0]["datasets"], scales):
        dataset["coordinateTransformations"] = [
            {"type": "scale", "scale": [float(scale[iy]), float(scale[ix])]}
        ]
    attributes["multiscales"][0]["axes"] = space
    if fmt == 3:  # 0.5: the version once, under "ome"
        del attributes["multiscales"][0]["version"], attributes["image-label"]["version"]
        attributes = {"ome": {"version": version, **attributes}}
    dtype = np.uint8 if len(classes) <= 256 else np.uint16
    target = root / "labels" / name
    remove_temp_dirs(target)
    with atomic_dir(target, overwrite=True) as tmp:
        made = zarr.create_group(LocalStore(tmp), zarr_format=fmt, attributes=attributes)
        arrays = [
            made.create_array(str(k), shape=shape, dtype=dtype, chunks=(CHUNK, CHUNK),
                              fill_value=0, **_array_format(fmt))
            for k, shape in enumerate(level_sizes)
        ]  # fmt: skip
        _write_bands(bands, size, [_Level(a, f) for a, f in zip(arrays, factors)])
    labels = zarr.open_group(str(root / "labels"), mode="a", zarr_format=fmt)
    listed: Any = labels.attrs.asdict()
    names = (listed.get("ome", {}) if fmt == 3 else listed).get("labels", [])
    names = [*[n for n in names if n != name], name]
    labels.attrs.update(
        {"ome": {"version": version, "labels": names}} if fmt == 3 else {"labels": names}
    )
    return target


def _array_format(fmt: int) -> dict[str, Any]:
    """``create_array`` arguments of a label level in Zarr format 2 or 3."""
    if fmt == 2:
        return {
            "compressor": _compressor(), "filters": None, "order": "C",
            "chunk_key_encoding": {"name": "v2", "separator": "/"},
        }  # fmt: skip
    return {"dimension_names": ["y", "x"]}


def _write_bands(bands: Iterable[np.ndarray], size: tuple[int, int], levels: list[_Level]) -> None:
    """Feed the mask's bands to every level, then finish them."""
    height, width = size
    y0 = 0
    for band in bands:
        if band.ndim != 2 or band.shape[1] != width or y0 + band.shape[0] > height:
            raise ValueError(f"a band of {band.shape} at row {y0} of a {size} mask")
        for level in levels:
            level.add(band, y0)
        y0 += band.shape[0]
    for level in levels:
        level.finish()


def _tiff_bands(path: Path, rows: int) -> tuple[Any, tuple[int, int], list[list[int]]]:
    """Bands of a mask TIFF (level 0, read by chunks), its size and its colour map's palette."""
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    page = tif.pages.first
    colormap = getattr(page, "colormap", None)
    palette = []
    if colormap is not None:  # 16-bit TIFF colour maps
        palette = [[int(v) >> 8 for v in colormap[:, i]] for i in range(colormap.shape[1])]
    array: Any = zarr.open(tif.aszarr(series=0, level=0), mode="r")
    height, width = (int(n) for n in array.shape[:2])

    def bands():
        try:
            for r0 in range(0, height, rows):
                yield np.asarray(array[r0 : r0 + rows])
        finally:
            tif.close()

    return bands(), (height, width), palette


def add_label(
    mask: str | os.PathLike,
    slide: str | os.PathLike,
    name: str | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Put a mask that ``unetkit predict`` wrote for a slide into the slide's own OME-Zarr as
    the label image ``labels/NAME`` (``write_slide_label``), read band by band.

    Args:
        mask: ``NAME.ome.zarr`` (``predict --zarr``: palette and class names travel with it)
            or ``NAME.tif`` (the BigTIFF mask: palette from its colour map).
        slide: the slide's OME-Zarr image (NGFF 0.4 / Zarr v2 or 0.5 / Zarr v3) whose level 0
            is the mask's size.
        name: the label image's name (default: the mask's name without its suffixes).
        classes: class names (default: those the mask carries, else ``class0``, ...).

    Returns:
        The label image's folder.

    Raises:
        UnetkitError: an unreadable mask, or a slide that is not an OME-Zarr image of the
            mask's size.
    """
    source = Path(mask)
    rows = 4 * CHUNK
    try:
        if source.is_dir():
            import zarr

            group = zarr.open_group(str(source), mode="r")
            attrs: Any = group.attrs.asdict()
            label = attrs.get("ome", attrs).get("image-label", {})
            colours = sorted(label.get("colors", []), key=lambda c: c["label-value"])
            palette = [list(c["rgba"][:3]) for c in colours]
            props = sorted(label.get("properties", []), key=lambda p: p["label-value"])
            named = [str(p.get("class", p["label-value"])) for p in props]
            array: Any = group["0"]
            size = (int(array.shape[0]), int(array.shape[1]))
            bands: Any = (np.asarray(array[r : r + rows]) for r in range(0, size[0], rows))
        else:
            bands, size, palette = _tiff_bands(source, rows)
            named = []
    except Exception as exc:  # noqa: BLE001 - zarr / tifffile fail in many ways
        raise UnetkitError(f"{source}: not a mask written by unetkit predict ({exc!r})") from None
    classes = classes or named or [f"class{i}" for i in range(max(1, len(palette)))]
    stem = source.name.removesuffix(SUFFIX).removesuffix(".tif").removesuffix(".tiff")
    return write_slide_label(slide, name or stem, bands, size, palette, classes)
