"""What ``predict_paths`` writes for each input: one frozen record, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.largeimage import LARGE_PIXELS, PixelSize, length_unit
from ..errors import UnetkitError


@dataclass(frozen=True)
class OutputOptions:
    """The outputs asked of ``predict_paths`` (its arguments, resolved) and, per image, the
    pixel size and pyramid level it is read at (``dataclasses.replace`` of the folder's).

    A bad value is one ``UnetkitError`` line, before any image is read.
    """

    save_probs: bool = False
    labelme: bool = False
    alpha: float = 0.5
    min_area: float = 0
    objects: bool = False  # the object outputs of images read whole
    region_objects: bool = False  # objects asked of images read by region (refused there)
    pixel: PixelSize | None = None  # given (``given_pixel``); per image: that or the image's own
    large_pixels: int = LARGE_PIXELS
    geojson: bool = False
    coco: bool = False
    coco_format: str = "rle"
    legend: bool = False
    level: int | None = None  # --level: the pyramid level of TIFFs read by region
    read_level: int | None = None  # per image: that level, read whole where it fits
    background: str | None = None
    zarr: bool = False

    def __post_init__(self) -> None:
        from ..objects.formats import COCO_SEGMENTATIONS
        from .background import BACKGROUNDS

        if self.coco_format not in COCO_SEGMENTATIONS:
            raise UnetkitError(
                f"COCO format must be one of {', '.join(COCO_SEGMENTATIONS)}; "
                f"got {self.coco_format!r}"
            )
        if self.background is not None and self.background not in BACKGROUNDS:
            raise UnetkitError(
                f"background must be one of {', '.join(BACKGROUNDS)}; got {self.background!r}"
            )

    @property
    def pixel_size(self) -> float | None:
        """The size of a pixel (its width) that object measurements use; None: pixels."""
        return None if self.pixel is None else self.pixel.x

    @property
    def pixel_unit(self) -> str:
        return "um" if self.pixel is None else self.pixel.unit


def given_pixel(pixel_size: float | None, pixel_unit: str) -> PixelSize | None:
    """``predict_paths``' pixel size and unit (``micron`` -> ``um``) as a square pixel; None
    without a size. A bad value is one ``UnetkitError`` line (a bad unit even without a size)."""
    if pixel_size is not None and not pixel_size > 0:
        raise UnetkitError(f"pixel size must be > 0; got {pixel_size}")
    unit = length_unit(pixel_unit)
    if unit is None:
        raise UnetkitError(f"pixel unit must be one of nm, um, mm, cm, m; got {pixel_unit!r}")
    return None if pixel_size is None else PixelSize(pixel_size, pixel_size, unit)
