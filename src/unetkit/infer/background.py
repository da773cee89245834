"""Network tiles of an image read by region that hold only background
(``predict --skip-background``, ``unetkit.infer.large``).

With ``background="bright"`` or ``"dark"`` the preview grid (every ``step``-th pixel) is turned
grey (mean of the channels) and thresholded by Otsu's method; preview pixels brighter
(``bright``: brightfield slides on white glass) or darker (``dark``: fluorescence) than the
threshold are background. A network tile whose input window (tile plus context) holds no
foreground preview pixel, within one preview pixel of the window, is not run: it counts as
class 0 with certainty (``unetkit.infer.skipping``). Pixels that no skipped tile covers are
predicted exactly as without skipping; pixels covered by skipped tiles only are class 0, and
where a skipped tile's blended border overlaps a computed one, the two are blended. A grey level
without contrast (a uniform preview) skips nothing.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnetkitError

BACKGROUNDS = ("bright", "dark")


def above_otsu(image: np.ndarray) -> np.ndarray | None:
    """(H, W) bool: the pixels of ``image``'s grey level (the mean of its channels, if it has
    them) above Otsu's threshold; None for an empty image or one without contrast."""
    grey = np.asarray(image, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    if not grey.size or float(grey.min()) == float(grey.max()):
        return None
    from skimage.filters import threshold_otsu

    return grey > threshold_otsu(grey)


class Background:
    """Which network tiles hold no foreground (module docstring), from the preview grid.

    Args:
        grid: ``image[::step, ::step]`` as (h, w, C).
        step: the grid's stride in image pixels.
        mode: ``bright`` (background brighter than the threshold) or ``dark``.

    Calling it with a window's rows and columns (slices or index arrays) says whether the
    window is background; ``tiles`` and ``skipped`` count the calls and the True answers.
    """

    def __init__(self, grid: np.ndarray, step: int, mode: str):
        if mode not in BACKGROUNDS:
            raise UnetkitError(f"background must be one of {', '.join(BACKGROUNDS)}; got {mode!r}")
        self.step = max(1, int(step))
        above = above_otsu(grid)
        # None: no contrast, nothing is skipped
        self.foreground = above if above is None or mode == "dark" else ~above
        self.tiles = self.skipped = 0

    @classmethod
    def from_mask(cls, foreground: np.ndarray | None, step: int) -> Background:
        """The background of a foreground grid computed elsewhere (rank 0's)."""
        made = cls(np.zeros((1, 1, 1), np.uint8), step, BACKGROUNDS[0])
        made.foreground = foreground
        return made

    def __call__(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> bool:
        self.tiles += 1
        if self.foreground is None:
            return False
        (y0, y1), (x0, x1) = _span(rows), _span(cols)
        s = self.step
        near = self.foreground[max(y0 // s - 1, 0) : y1 // s + 2, max(x0 // s - 1, 0) : x1 // s + 2]
        empty = not bool(near.any())
        self.skipped += empty
        return empty


def _span(index: slice | np.ndarray) -> tuple[int, int]:
    """First and last pixel (inclusive) of a slice with step 1 or an index array."""
    if isinstance(index, slice):
        return int(index.start), int(index.stop) - 1
    return int(index.min()), int(index.max())
