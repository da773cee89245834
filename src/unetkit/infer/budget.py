"""Memory of a prediction: the forward pass of a tile and the image's own buffers.

On a CPU the forward pass and the image share one budget (``CPU_BUDGET``, or a quarter of the
available memory if that is less). The image's buffers are held at its own size while it is
predicted and drawn: the input, the class mask, the colour mask, the overlay and one PNG
encoding of them; the probabilities ``(K, H, W)`` where they are kept (``predict_proba``,
``--save-probs``, objects) and then the object outputs too. The normalised copy is made tile by
tile and is part of the forward pass. What these leave is the forward pass's (never less than
``CPU_FLOOR``): the tile shrinks only where an image's buffers take most of the budget. The
allocator keeps what a phase freed for the next, so the phases count as if held at once.
"""

from __future__ import annotations

import math

import torch

from ..device import available_memory

# The largest tile side ``auto_tiling`` picks: on a CPU the network's pixel rate is flat up to
# about 640 px and falls beyond (bench/predict.py; docs/benchmarks.md); a GPU gains from
# larger tiles.
MAX_TILE = {"cpu": 640, "cuda": 1024}
BYTES_PER_PIXEL_AND_WIDTH = 24  # peak forward memory / (input pixels x first-level width)
CPU_BUDGET = 2**30  # a CPU prediction's forward pass and image buffers together
CPU_FLOOR = 2**28  # the forward pass's share however large the image (a 416 px tile at width 64)

# bytes per image pixel held beside the forward pass
MASK_BYTES = 1  # the uint8 class mask
PICTURE_BYTES = 3 + 3 + 3  # NAME_color.png, NAME_overlay.png, one RGB PNG encoding
PROB_BYTES = 4 + 2  # per class: float32 probabilities and their float16 copy (--save-probs)
OBJECT_BYTES = 4 + 4 + 3  # int32 object ids, float32 object scores, NAME_objects.png


def image_bytes(size: tuple[int, int], channels: int, itemsize: int = 1, classes: int = 0) -> int:
    """Bytes an image of ``size`` holds at its own size while it is predicted and drawn.

    Args:
        size: ``(H, W)``.
        channels, itemsize: of the input array (an RGB uint8 image: 3, 1).
        classes: the channels of the probabilities where they are kept (0: the mask only, as
            ``predict_mask``); with them the object outputs are counted too.

    Returns:
        ``H x W`` times the bytes per pixel of the input, mask, pictures (and probabilities
        and objects).
    """
    per_pixel = channels * itemsize + MASK_BYTES + PICTURE_BYTES
    if classes:
        per_pixel += classes * PROB_BYTES + OBJECT_BYTES
    return int(size[0]) * int(size[1]) * per_pixel


def auto_tiling(first_width: int, device: torch.device, held: int = 0) -> tuple[int, int]:
    """The tile side and tiles per batch when none are asked for.

    The tile is as large as pays on the device (``MAX_TILE``) and as memory allows: a forward
    pass takes about ``BYTES_PER_PIXEL_AND_WIDTH x first_width`` bytes per input pixel
    (a margin above what bf16 milesial models take). On a CPU it gets what ``held`` bytes of
    the image's buffers (``image_bytes``) leave of 1 GiB (a quarter of the available memory if
    that is less), at least ``CPU_FLOOR``; on a GPU a quarter of the free memory (the image's
    buffers are in host memory). A CPU runs one tile at a time (larger batches are slower
    there); a GPU batches up to 8. Larger tiles mean fewer borders: less context computed twice.

    Returns:
        ``(tile side, batch size)``; the side is a multiple of 16 and at least 64.
    """
    per_pixel = BYTES_PER_PIXEL_AND_WIDTH * max(int(first_width), 1)
    if device.type == "cuda":
        kind, budget, most = "cuda", torch.cuda.mem_get_info(device)[0] / 4, 8
    else:
        total = min(CPU_BUDGET, available_memory() / 4)
        kind, budget, most = "cpu", max(total - held, min(CPU_FLOOR, total)), 1
    side = min(MAX_TILE[kind], int(math.sqrt(budget / per_pixel)))
    side = max(64, side // 16 * 16)
    return side, int(max(1, min(most, budget // (per_pixel * side * side))))
