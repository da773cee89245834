"""train/criterion.py: the weight map of instance data."""

from __future__ import annotations

import numpy as np
from PIL import Image
from training import make_instance_dataset

from unetkit import TrainConfig


def test_instance_weight_map_comes_from_the_instances(tmp_path):
    """With --weight-map the border term sits where two true objects touch."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.layout import describe_dataset
    from unetkit.train.criterion import weight_map_fn
    from unetkit.train.plan import resolve_config

    data = make_instance_dataset(tmp_path / "inst", n=1)
    info = describe_dataset(data)
    cfg = resolve_config(TrainConfig(dataset=str(data), task="instance", weight_map=True), info)
    ds = SegmentationDataset(info, ["00"], cfg.data.replace(resize="none"),
                             weight_fn=weight_map_fn(cfg, info), boundary_width=1)  # fmt: skip
    item = ds[0]
    weight, target = item["weight"].numpy(), item["mask"].numpy()
    ids = np.asarray(Image.open(data / "instances" / "00.png")).astype(np.int32)
    touching = (
        (target == 2)
        & (np.abs(np.diff(ids, axis=1, prepend=0)) > 0)
        & (np.roll(ids, 1, axis=1) > 0)
    )
    assert touching.any() and (weight[touching] > 5).all()
    assert weight[(target == 1)].max() == 1.0
