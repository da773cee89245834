"""Tiled prediction of images of any size: blended sliding window and the paper's overlap-tile.

Both are one algorithm over a per-axis plan (``AxisPlan``): output tiles of ``tile_out`` pixels
start at ``starts``; each is computed from an input window ``margin`` pixels larger on each side
(``margin = 0`` for same-padding networks, the receptive-field loss for valid-padding ones).
Input beyond the image border is mirrored (reflect, no edge repeat) by index arithmetic on the
window, so the image itself is never padded or copied. Tile outputs are accumulated in one band
of output rows at a time on the network's device, and each band is handed out as soon as no later
tile can touch it: peak memory grows with the tile and the image width, not with the image.

Tile starts are multiples of the network's down-sampling factor (``2**depth``): a U-Net is only
shift-equivariant for such shifts (its pooling grid), so every tile of a valid-padding network
computes exactly what one whole-image run on the mirrored image computes (Ronneberger et al.
2015, section 2: "seamless tiling"); the stride loses at most ``align - 1`` pixels per tile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from ..config import BLENDS
from ..errors import UnetkitError
from ..models.unet import reflect_indices
from ..progress import progress as progress_bar
from .budget import MAX_TILE, auto_tiling  # noqa: F401 - the tile rule's old home

if TYPE_CHECKING:
    from ..models.unet import UNet

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]
_Image = TypeVar("_Image", bound="np.ndarray | torch.Tensor")  # prepare gets windows of it


@dataclass(frozen=True)
class SizeRule:
    """A network's size contract, as tiling needs it.

    Args:
        output_size: ``(h, w) -> (h', w')`` for a legal input; raises ``ValueError`` otherwise.
        legal_sizes: ``n -> (largest legal <= n, smallest legal >= n)`` (``None`` if none).
        align: tile starts are multiples of this (the network's total down-sampling factor).
    """

    output_size: Callable[[tuple[int, int]], tuple[int, int]]
    legal_sizes: Callable[[int], tuple[int | None, int | None]]
    align: int = 1

    @classmethod
    def from_model(cls, model: UNet) -> SizeRule:
        """The rule of a ``UNet`` (``output_size``, ``legal_sizes``, ``2**depth``)."""
        return cls(model.output_size, model.legal_sizes, 2 ** int(model.config.depth))

    @classmethod
    def any_size(cls) -> SizeRule:
        """A network that accepts every size and keeps it (a per-pixel function)."""
        return cls(lambda size: (int(size[0]), int(size[1])), lambda n: (n, n), 1)

    def out_len(self, n: int) -> int:
        """Output length along one axis for a legal input length ``n``."""
        return int(self.output_size((n, n))[0])

    def above(self, n: int) -> int:
        """The smallest legal input length >= ``n``; ``UnetkitError`` if there is none."""
        above = self.legal_sizes(max(int(n), 1))[1]
        if above is None:
            raise UnetkitError(f"no legal network input size at or above {n}")
        return int(above)

    def at_most(self, n: int) -> int:
        """The largest legal input length <= ``n``, else the smallest legal one above it."""
        below, above = self.legal_sizes(max(int(n), 1))
        best = below if below is not None else above
        if best is None:
            raise UnetkitError(f"no legal network input size near {n}")
        return int(best)


@dataclass(frozen=True)
class AxisPlan:
    """Where the tiles lie along one axis.

    Tile ``k`` reads the input ``[windows[k], windows[k] + tile_in)`` (mirrored beyond the
    image); row ``r`` of its ``tile_out`` output rows is image row ``windows[k] + offset + r``,
    and only its rows ``keeps[k] = (a, b)`` are used.
    """

    length: int
    tile_in: int
    tile_out: int
    offset: int
    windows: tuple[int, ...]
    keeps: tuple[tuple[int, int], ...]

    def first_row(self, k: int) -> int:
        """The first image row tile ``k`` contributes to."""
        return self.windows[k] + self.offset + self.keeps[k][0]


def plan_axis(
    length: int, tile: int | None, overlap: float, rule: SizeRule, context: int | None = None
) -> AxisPlan:
    """Plan the tiles along one axis of ``length`` pixels.

    Args:
        length: image length along the axis (>= 1).
        tile: requested input tile length (made legal: the largest legal length <= it), or
            ``None`` for one whole-axis tile (the ``full`` strategy). A tile larger than the
            axis needs becomes the whole-axis tile.
        overlap: fraction of the kept tile shared by neighbours, in [0, 1), blended; ignored by
            valid-padding networks, whose tiles see their full context and agree exactly.
        rule: the network's size contract.
        context: same-padding networks only: rows discarded at each inner tile border, which
            see zero padding instead of the image (default ``default_context(rule)``).

    Returns:
        The ``AxisPlan``.

    Raises:
        UnetkitError: a bad overlap, or a network whose output is not centred in its input.
    """
    if not 0.0 <= overlap < 1.0:
        raise UnetkitError(f"overlap must be in [0, 1), got {overlap}")
    t_in = rule.above(length) if tile is None else rule.at_most(tile)
    t_out = rule.out_len(t_in)
    if (t_in - t_out) % 2:
        raise UnetkitError(f"network output {t_out} is not centred in its input {t_in}")
    if t_out == t_in:
        return _plan_same(length, tile, overlap, rule, context)
    return _plan_valid(length, tile, rule, (t_in - t_out) // 2)


def _plan_same(
    length: int, tile: int | None, overlap: float, rule: SizeRule, context: int | None
) -> AxisPlan:
    """Same padding: windows inside the image padded (visibly, mirrored) to the pooling grid.

    The tile is the smallest legal one (on the pooling grid) that needs no more windows than
    the requested tile: the windows are balanced over the axis instead of the last one
    overlapping its neighbour by almost a whole tile.
    """
    align = rule.align
    extent = -(-length // align) * align  # the whole-image run sees this much, cropped back
    t = rule.at_most(tile // align * align) if tile is not None else extent
    if extent <= t:
        t = rule.above(extent)
        return AxisPlan(length, t, t, 0, (0,), ((0, length),))
    c_wanted = default_context(rule) if context is None else int(context)

    def windows_for(t: int) -> tuple[int, list[int]]:
        c = max(0, min(c_wanted, (t - align) // 2))
        inner = t - 2 * c
        stride = min(max(int(inner * (1.0 - overlap)) // align * align, align), inner)
        return c, [*range(0, extent - t, stride), extent - t]

    count = len(windows_for(t)[1])
    for smaller in range(t - align, align - 1, -align):  # balance: shrink while no more tiles
        if rule.at_most(smaller) != smaller or len(windows_for(smaller)[1]) > count:
            break
        t = smaller
    c, windows = windows_for(t)
    keeps = [(0 if w == 0 else c, t - c if w + t < extent else length - w) for w in windows]
    return AxisPlan(length, t, t, 0, tuple(windows), tuple(keeps))


def default_context(rule: SizeRule) -> int:
    """Rows a same-padding tile discards at each inner border: ``2 * align`` (32 for depth 4).

    That is the reach of the two 3x3 convolutions at the coarsest level, one cell of the
    pooling grid each, in image pixels: tiled masks then agree with the whole-image mask on
    >= 99.9 % of pixels (tested); a larger ``plan_axis(context=...)`` buys more agreement
    with more pixels computed twice.
    """
    return 2 * rule.align


def _plan_valid(length: int, tile: int | None, rule: SizeRule, margin: int) -> AxisPlan:
    """Valid padding (overlap-tile): output tiles abut, each window adds its mirrored context."""
    t_whole = rule.above(length + 2 * margin)
    t = rule.at_most(tile) if tile is not None else t_whole
    if t_whole <= t:
        out = rule.out_len(t_whole)
        m = (t_whole - out) // 2
        return AxisPlan(length, t_whole, out, m, (-m,), ((0, length),))
    out = rule.out_len(t)
    stride = out // rule.align * rule.align or out  # keeps every window on the pooling grid
    count = math.ceil((length - out) / stride) + 1
    windows = tuple(k * stride - margin for k in range(count))
    keeps = tuple((0, stride) for _ in range(count - 1)) + ((0, length - (count - 1) * stride),)
    return AxisPlan(length, t, out, margin, windows, keeps)


def _axis_index(start: int, stop: int, length: int) -> slice | np.ndarray:
    if start >= 0 and stop <= length:
        return slice(start, stop)  # a view: memory-mapped inputs read only this window
    return reflect_indices(start, stop, length)


def read_window(image: np.ndarray | torch.Tensor, ys: tuple[int, int], xs: tuple[int, int]):
    """A window of an image, mirrored beyond its border.

    Args:
        image: ``np.ndarray (H, W, ...)`` (possibly memory-mapped), ``torch.Tensor (C, H, W)``,
            or an object with ``shape`` (H, W, C) and ``read_region(rows, cols)``
            (``unetkit.data.largeimage.LargeImage``).
        ys, xs: ``(start, stop)`` rows and columns; may extend beyond the image.

    Returns:
        The window, same type and layout as ``image``: ``(h, w, ...)`` or ``(C, h, w)``.
    """
    tensor = isinstance(image, torch.Tensor)
    height, width = image.shape[-2:] if tensor else image.shape[:2]
    rows, cols = _axis_index(*ys, height), _axis_index(*xs, width)
    if hasattr(image, "read_region"):  # an image read by region (``data.largeimage``)
        return image.read_region(rows, cols)
    if isinstance(image, torch.Tensor):
        if isinstance(rows, np.ndarray):
            image = image.index_select(-2, torch.as_tensor(rows, device=image.device))
            rows = slice(None)
        if isinstance(cols, np.ndarray):
            image = image.index_select(-1, torch.as_tensor(cols, device=image.device))
            cols = slice(None)
        return image[..., rows, cols]
    window = image[rows] if isinstance(rows, np.ndarray) else image[rows.start : rows.stop]
    return window[:, cols] if isinstance(cols, np.ndarray) else window[:, cols.start : cols.stop]


def blend_weights(size: tuple[int, int], blend: str, device: torch.device | str = "cpu"):
    """Per-pixel weights of one output tile: ``(h, w)`` float32, max 1, never 0.

    ``gaussian`` uses sigma = size / 8 per axis (nnU-Net's choice), so tile borders, which see
    the least context, count least where tiles overlap.
    """
    if blend not in BLENDS:
        raise UnetkitError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    h, w = size
    if blend == "constant":
        return torch.ones(h, w, device=device)
    axes = []
    for n in (h, w):
        x = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (x / max(n / 8, 1e-6)) ** 2))
    return (axes[0][:, None] * axes[1][None, :]).clamp_min(1e-4)  # (h, w)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def iter_bands(
    forward: Forward,
    image: _Image,
    plans: tuple[AxisPlan, AxisPlan],
    *,
    prepare: Callable[[_Image], torch.Tensor] | None = None,
    blend: str = "gaussian",
    batch_size: int = 4,
    progress: bool = False,
    row_range: tuple[int, int] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Run ``forward`` tile by tile and yield finished bands of output rows, top to bottom.

    Args:
        forward: ``(B, C, th, tw) -> (B, K, th', tw')`` float, on any device.
        image: ``np.ndarray (H, W, ...)`` or ``torch.Tensor (C, H, W)``.
        plans: the row and column ``AxisPlan``.
        prepare: window -> network input ``(C, th, tw)`` (e.g. normalisation); default: the
            window itself (a tensor) or its ``(C, h, w)`` float32 transpose (an array).
        blend: ``gaussian`` or ``constant`` weighting where kept tile parts overlap.
        batch_size: tiles per forward call.
        progress: show a progress bar over tiles (on a terminal).
        row_range: only image rows ``[r0, r1)``: only the rows of tiles that touch them run, and
            each row comes out as the whole run computes it (the same tiles, added in the
            same order). A whole image predicted in parts (processes, a resumed run) is
            exactly the image predicted at once.

    Yields:
        ``(y0, y1, band)`` with ``band`` float32 ``(K, y1 - y0, W)`` on ``forward``'s device;
        the bands tile ``[0, H)`` (``[r0, r1)``) exactly.
    """
    py, px = plans
    prepare = prepare or _default_prepare
    r0, r1 = (0, py.length) if row_range is None else row_range
    ends = [w + py.offset + keep[1] for w, keep in zip(py.windows, py.keeps)]
    first = next((k for k, end in enumerate(ends) if end > r0), len(ends))  # touches row r0
    stop = next((k for k in range(first + 1, len(ends)) if py.first_row(k) >= r1), len(ends))
    total = (stop - first) * len(px.windows)
    bar = progress_bar(total=total, desc="tiles", unit="tile", leave=False, disable=not progress)
    weights = acc = wsum = None
    done = py.first_row(first) if first < stop else r1  # rows [.., done) were finished; the
    try:  # buffers hold rows [done, done + tile_out)
        for k in range(first, stop):
            wy = py.windows[k]
            ay, by = py.keeps[k]
            ys = (wy, wy + py.tile_in)
            rows = slice(wy + py.offset + ay - done, wy + py.offset + by - done)
            for group in _batches(list(enumerate(px.windows)), max(1, batch_size)):
                batch = [read_window(image, ys, (wx, wx + px.tile_in)) for _, wx in group]
                out = forward(torch.stack([prepare(w) for w in batch])).float()
                _check_tile(out, py, px)
                if weights is None:
                    weights = blend_weights((py.tile_out, px.tile_out), blend, out.device)
                    acc = out.new_zeros(out.shape[1], py.tile_out, px.length)
                    wsum = out.new_zeros(1, py.tile_out, px.length)
                assert acc is not None and wsum is not None  # made with weights
                for (j, wx), tile_out in zip(group, out):
                    ax, bx = px.keeps[j]
                    cols = slice(wx + px.offset + ax, wx + px.offset + bx)
                    w = weights[ay:by, ax:bx]
                    acc[:, rows, cols] += tile_out[:, ay:by, ax:bx] * w
                    wsum[:, rows, cols] += w
                bar.update(len(group))
            last = k + 1 == len(py.windows)
            n = (py.length if last else py.first_row(k + 1)) - done
            assert acc is not None and wsum is not None  # every row has at least one tile
            y0, y1 = max(done, r0), min(done + n, r1)  # rows before r0 lack earlier tiles
            if y0 < y1:
                yield y0, y1, acc[:, y0 - done : y1 - done] / wsum[:, y0 - done : y1 - done]
            done += n
            if not last:  # shift the band up by the finished rows
                acc = torch.cat([acc[:, n:], torch.zeros_like(acc[:, :n])], 1)
                wsum = torch.cat([wsum[:, n:], torch.zeros_like(wsum[:, :n])], 1)
    finally:
        bar.close()


def _default_prepare(window: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(window, torch.Tensor):
        return window.float()
    array = np.asarray(window, dtype=np.float32)
    return torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)


def _check_tile(out: torch.Tensor, py: AxisPlan, px: AxisPlan) -> None:
    if tuple(out.shape[-2:]) != (py.tile_out, px.tile_out):
        raise UnetkitError(
            f"network output {tuple(out.shape[-2:])} for input ({py.tile_in}, {px.tile_in}); "
            f"expected ({py.tile_out}, {px.tile_out})"
        )


def plan_image(
    size: tuple[int, int],
    tile: tuple[int, int] | None,
    overlap: float,
    rule: SizeRule,
    context: int | None = None,
) -> tuple[AxisPlan, AxisPlan]:
    """Row and column plans for an image of ``size``; ``tile=None`` is one whole-image tile."""
    tiles = tile if tile is not None else (None, None)
    return tuple(  # type: ignore[return-value]
        plan_axis(int(n), t, overlap, rule, context) for n, t in zip(size, tiles)
    )


def image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of a ``(C, H, W)`` tensor or an ``(H, W, ...)`` array."""
    shape = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    return int(shape[0]), int(shape[1])


def predict_tiled(
    forward: Forward,
    image: _Image,
    tile: tuple[int, int] | None,
    overlap: float = 0.25,
    rule: SizeRule | None = None,
    *,
    context: int | None = None,
    prepare: Callable[[_Image], torch.Tensor] | None = None,
    blend: str = "gaussian",
    batch_size: int = 4,
    progress: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    out_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Predict a whole image tile by tile; the output has the image's size exactly.

    Args:
        forward: ``(B, C, th, tw) -> (B, K, th', tw')``; usually probabilities.
        image: ``torch.Tensor (C, H, W)`` or ``np.ndarray (H, W, C)`` (with ``prepare``).
        tile: input tile ``(th, tw)`` (made legal), or ``None`` for one whole-image tile
            (padded to a legal size by mirroring, cropped back exactly: the ``full`` strategy).
        overlap: shared fraction of neighbouring tiles, in [0, 1).
        rule: the network's size contract (default: any size, output = input).
        context: see ``plan_axis``.
        prepare, blend, batch_size, progress: see ``iter_bands``.
        reduce: applied to each band ``(K, h, W)`` before it is stored (e.g. an argmax to
            ``(h, W)``), so a huge image never needs its ``(K, H, W)`` float buffer.
        out_device: where the result is assembled.

    Returns:
        ``(K, H, W)`` float32, or ``reduce``'s outputs concatenated along rows.

    Raises:
        UnetkitError: illegal tile sizes, a bad overlap or blend.
    """
    rule = rule or SizeRule.any_size()
    height, width = image_size(image)
    plans = plan_image((height, width), tile, overlap, rule, context)
    log.debug("tiles: rows %s, cols %s", plans[0], plans[1])
    result = None
    for y0, y1, band in iter_bands(
        forward,
        image,
        plans,
        prepare=prepare,
        blend=blend,
        batch_size=batch_size,
        progress=progress,
    ):
        band = reduce(band) if reduce is not None else band
        if result is None:
            shape = (*band.shape[:-2], height, width)
            result = torch.empty(shape, dtype=band.dtype, device=out_device)
        result[..., y0:y1, :] = band.to(out_device)
    assert result is not None  # every plan has at least one tile
    return result
