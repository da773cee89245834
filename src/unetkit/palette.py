"""Class colours: the PASCAL VOC colour map, shared by the data and the pictures (``viz``)."""

from __future__ import annotations

import numpy as np

__all__ = ["make_palette"]


def make_palette(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map (labelme's too): class 0 black, 1 dark red, 2 dark green, ...

    Each class index's bits are spread over the three channels from the most significant bit
    down (bit 0 -> red, bit 1 -> green, bit 2 -> blue, then the next three bits one step lower).

    Args:
        n: number of colours.

    Returns:
        ``n`` lists ``[r, g, b]`` of ints in 0..255.
    """
    index = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            rgb[:, channel] |= bit << (7 - shift)
    return rgb.tolist()
