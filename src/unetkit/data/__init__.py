"""Data: labelme conversion, dataset folders, exact image/mask I/O, augmentation, toy data.

Submodules are imported on use (``from unetkit.data.dataset import SegmentationDataset``) so
that importing ``unetkit`` stays light.
"""
