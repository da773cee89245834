"""Multi-page TIFFs (time-lapses, z-stacks, page sequences) read one plane at a time.

A *stack* is a TIFF whose first image series (tifffile's ``TiffFile.series[0]``) has, beyond
its image axes, axes of planes: ``T`` (time), ``Z`` (depth), ``I`` (a plain sequence of pages,
as Pillow and most tools write multi-page TIFFs) or ``Q`` (pages of unknown meaning, as
``tifffile.imwrite`` writes an ``(N, H, W)`` array); ImageJ hyperstacks (``TZCYX``) and OME-TIFFs
(any order of T, Z and C) included. A *plane* is one index of every plane axis: an
``(H, W, C)`` image whose channels come from the ``C`` or ``S`` (samples, RGB) axis, as
``unetkit.data.imageio.read_image`` returns a single image (uint8, uint16 or float32). A file
of several single-page series of one size (``TiffWriter.write`` called once per frame) is a
stack too, of ``I`` planes.

``TiffStack.read(i)`` decodes plane ``i`` alone (through ``TiffFile.aszarr``: the pages or
tiles under it), so a stack larger than memory is never whole in it.

``stack_layout`` says whether a file is a stack (None for anything else: single images, and
files tifffile cannot read, which the normal reader reports) and refuses, in one line naming
the file, a multi-page TIFF that cannot be read as one: pages of different sizes, no planes,
axes other than T, Z, I, Q, C, S, Y, X (the message names them), channels on two axes.

Planes are labelled ``t=3`` / ``z=1,t=0`` (lower-case axis letters and the plane's index along
each, in the file's order), or ``plane=3`` for a stack of one generic axis (I or Q).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import UnetkitError
from .imageio import check_finite, max_pixels

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
PLANE_AXES = "TZIQ"
CHANNEL_AXES = "CS"
GENERIC_AXES = "IQ"
_KNOWN = PLANE_AXES + CHANNEL_AXES + "YX"
_SINGLE_SERIES = ("generic", "shaped", "uniform")  # tifffile series kinds of plain files


@dataclass(frozen=True)
class StackLayout:
    """What a stack holds.

    Attributes:
        axes: the series' axes as tifffile names them (``TZCYX``, ``IYXS``, ...).
        plane_axes: the axes of planes, in the file's order (``TZ``, ``I``, ...).
        plane_shape: the length of each plane axis.
        height, width, channels: the size of one plane (channels from C or S; 1 without).
        dtype: the stored sample type.
        series: 0 for planes along the axes of ``series[0]``; else the number of single-page
            series of one size that make up the stack (one plane each).
    """

    axes: str
    plane_axes: str
    plane_shape: tuple[int, ...]
    height: int
    width: int
    channels: int
    dtype: np.dtype
    series: int = 0

    @property
    def count(self) -> int:
        return int(math.prod(self.plane_shape))

    def index(self, plane: int) -> tuple[int, ...]:
        """The index along every plane axis of plane ``plane`` (C order, as the pages lie)."""
        return tuple(int(i) for i in np.unravel_index(plane, self.plane_shape))

    def label(self, plane: int) -> str:
        """``t=3``, ``z=1,t=0``, or ``plane=3`` for one generic axis (module docstring)."""
        return plane_label(self.plane_axes, self.index(plane), plane)


def plane_label(plane_axes: str, index: tuple[int, ...], plane: int) -> str:
    """The label of a plane (module docstring)."""
    if len(plane_axes) == 1 and plane_axes in GENERIC_AXES:
        return f"plane={plane}"
    return ",".join(f"{a.lower()}={i}" for a, i in zip(plane_axes, index))


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _several_series(path: Path, tif: Any) -> StackLayout | None:
    """A stack of single-page series of one size (``TiffWriter.write`` once per frame), or
    None where the series are of another kind (a slide's label and macro images)."""
    series = list(tif.series)
    if len(series) < 2 or any(s.kind not in _SINGLE_SERIES for s in series):
        return None
    first = series[0]
    if 0 in first.shape:
        raise UnetkitError(f"{path}: a TIFF stack of no planes (shape {_size(first.shape)})")
    for number, other in enumerate(series[1:], 1):
        if other.shape != first.shape or other.dtype != first.dtype:
            raise UnetkitError(
                f"{path}: a multi-page TIFF with pages of different sizes (page 0: "
                f"{_size(first.shape)} {first.dtype}, page {number}: {_size(other.shape)} "
                f"{other.dtype}); unetkit predicts stacks of planes of one size"
            )
    if first.axes not in ("YX", "YXS", "SYX"):
        raise UnetkitError(
            f"{path}: {len(series)} image series of axes {first.axes}; unetkit reads a stack "
            "from one series, or from series of one page each"
        )
    channels = first.shape[first.axes.index("S")] if "S" in first.axes else 1
    height, width = (int(first.shape[first.axes.index(a)]) for a in "YX")
    return StackLayout(
        first.axes, "I", (len(series),), height, width, int(channels), np.dtype(first.dtype),
        series=len(series),
    )  # fmt: skip


def _layout(path: Path, tif: Any, level: int | None) -> StackLayout | None:
    several = _several_series(path, tif)
    if several is not None:
        return several
    series = tif.series[0]
    levels = series.levels
    chosen = level or 0
    if not 0 <= chosen < len(levels):
        raise UnetkitError(
            f"{path}: no pyramid level {chosen} (it has levels 0..{len(levels) - 1})"
        )
    series = levels[chosen]
    axes, shape = str(series.axes), tuple(int(n) for n in series.shape)
    plane_axes = "".join(a for a in axes if a in PLANE_AXES)
    if 0 in shape:
        raise UnetkitError(f"{path}: a TIFF stack of no planes (shape {_size(shape)})")
    if math.prod(shape[axes.index(a)] for a in plane_axes) <= 1 and set(axes) <= set(_KNOWN):
        return None  # one plane: an image (the normal reader, which refuses several pages)
    unknown = "".join(a for a in axes if a not in _KNOWN)
    if unknown or not axes.endswith(("YX", "YXS")):
        raise UnetkitError(
            f"{path}: a TIFF stack of axes {axes} ({_size(shape)}): cannot interpret axis "
            f"{unknown or axes}; unetkit predicts planes along T, Z or page axes (I, Q), with "
            "channels along C or S"
        )
    sizes = dict(zip(axes, shape))
    if sizes.get("C", 1) > 1 and sizes.get("S", 1) > 1:
        raise UnetkitError(
            f"{path}: a TIFF stack of axes {axes} ({_size(shape)}) holds channels on two axes "
            "(C and S); unetkit reads one channel axis"
        )
    return StackLayout(
        axes,
        plane_axes,
        tuple(sizes[a] for a in plane_axes),
        sizes["Y"],
        sizes["X"],
        sizes.get("C", 1) * sizes.get("S", 1),
        np.dtype(series.dtype),
    )


def stack_layout(path: str | os.PathLike, level: int | None = None) -> StackLayout | None:
    """The layout of a TIFF stack (module docstring); None for anything that is not one.

    Args:
        path: any file.
        level: the pyramid level of a pyramidal stack (None: full resolution).

    Raises:
        UnetkitError: a multi-page TIFF that cannot be read as a stack (module docstring).
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    try:
        import tifffile

        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: the normal reader says why
        return None
    with tif:
        try:
            if len(tif.pages) < 2:
                return None
            layout = _layout(path, tif, level)
        except UnetkitError:
            raise
        except Exception:  # noqa: BLE001 - a corrupt IFD chain: the normal reader reports it
            return None
    return layout


def is_stack(path: str | os.PathLike, level: int | None = None) -> bool:
    """Whether ``path`` is a stack, or a multi-page TIFF refused as one (its error is raised
    when it is opened as a ``TiffStack``)."""
    try:
        return stack_layout(path, level) is not None
    except UnetkitError:
        return True


def as_image(plane: np.ndarray, name: str) -> np.ndarray:
    """A plane as ``read_image`` returns an image: uint8 / uint16 kept, float as float32
    (finite values only), other integers as uint16 when they fit 0..65535, bool as uint8."""
    if plane.dtype in (np.uint8, np.uint16):
        return plane
    if plane.dtype == bool:
        return plane.astype(np.uint8)
    if np.issubdtype(plane.dtype, np.floating):
        return check_finite(plane.astype(np.float32, copy=False), name)
    if np.issubdtype(plane.dtype, np.integer):
        if plane.size and (plane.min() < 0 or plane.max() > 65535):
            raise UnetkitError(
                f"{name}: {plane.dtype} image with values outside 0..65535 "
                f"({int(plane.min())}..{int(plane.max())})"
            )
        return plane.astype(np.uint16)
    raise UnetkitError(f"{name}: unsupported sample type {plane.dtype}")


class TiffStack:
    """A TIFF stack read one plane at a time. Use as a context manager, or ``close()``.

    Args:
        path: the TIFF.
        level: the pyramid level (None / 0: full resolution).

    Raises:
        UnetkitError: not a stack (``stack_layout``), a plane over ``max_pixels``, an
            unreadable file.
    """

    def __init__(self, path: str | os.PathLike, level: int | None = None):
        import tifffile
        import zarr

        self.path = Path(path)
        layout = stack_layout(self.path, level)
        if layout is None:
            raise UnetkitError(f"{self.path}: not a multi-page TIFF stack")
        self.layout = layout
        limit = max_pixels()
        if limit and layout.height * layout.width > limit:
            raise UnetkitError(
                f"{self.path}: cannot read image: planes of {layout.width}x{layout.height} "
                f"(WxH) = {layout.height * layout.width:,} pixels, over the limit of "
                f"{limit:,}; refused before decoding"
            )
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # noqa: BLE001
            raise UnetkitError(f"{self.path}: not a readable TIFF ({exc})") from None
        self._array: Any = None
        if not layout.series:
            try:
                store = self._tif.aszarr(series=0, level=level or 0)
                self._array = cast("zarr.Array", zarr.open(store, mode="r"))
            except Exception as exc:  # noqa: BLE001
                self._tif.close()
                raise UnetkitError(f"{self.path}: cannot read by plane ({exc})") from None

    def __len__(self) -> int:
        return self.layout.count

    def read(self, plane: int) -> np.ndarray:
        """Plane ``plane`` as an (H, W, C) image (``as_image``)."""
        layout = self.layout
        if not 0 <= plane < layout.count:
            raise IndexError(plane)
        try:
            if layout.series:
                data = np.asarray(self._tif.series[plane].asarray())
                rest = layout.axes
            else:
                where = dict(zip(layout.plane_axes, layout.index(plane)))
                key = tuple(where.get(a, slice(None)) for a in layout.axes)
                data = np.asarray(self._array[key])
                rest = "".join(a for a in layout.axes if a not in layout.plane_axes)
        except Exception as exc:  # noqa: BLE001 - a corrupt page deep in the file
            raise UnetkitError(
                f"{self.path}: cannot read plane {layout.label(plane)} ({exc})"
            ) from None
        order = [rest.index("Y"), rest.index("X")] + [i for i, a in enumerate(rest) if a in "CS"]
        data = data.transpose(order).reshape(layout.height, layout.width, -1)
        return as_image(data, f"{self.path} [{layout.label(plane)}]")

    def close(self) -> None:
        self._array = None
        self._tif.close()

    def __enter__(self) -> TiffStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
