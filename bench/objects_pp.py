"""Post-processing time of each instance head on synthetic nuclei, 1024^2 and 4096^2 pixels.

Discs of radius 6-12 px on a jittered grid (1 in 24 px: dense, 1764 objects per 1024^2; or
1 in 44 px: about 500), the maps each head's perfect model would predict (``truth_maps`` of
``bench/dsb_instances.py``), made noisy as a trained model's are (the normalised distance
+ N(0, 0.1) inside objects, each ray x N(1, 0.15)), through ``separate_objects`` at the
defaults (``min_size`` 0). Prints CPU seconds of this process (``time.process_time``, best
of ``--repeat``; one thread for torch and numba), objects found and true, and the cost per
megapixel, so that linear growth with the pixels shows as a constant.

    python bench/objects_pp.py
    python bench/objects_pp.py --sizes 1024 --heads rays
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dsb_instances import truth_maps


def nuclei(size: int, step: int, seed: int = 0) -> np.ndarray:
    """(size, size) int32 ids: a disc of radius 6-12 px per ``step`` px, jittered by 3 px."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    count = 0
    for cy in range(12, size - 10, step):
        for cx in range(12, size - 10, step):
            count += 1
            centre = (cy + rng.integers(-3, 4), cx + rng.integers(-3, 4))
            labels[disk(centre, rng.integers(6, 13), shape=labels.shape)] = count
    return labels


def noisy(maps: np.ndarray, head: str, seed: int = 0) -> np.ndarray:
    """A trained model's maps: the distance (and rays) perturbed inside objects."""
    if head == "boundary":
        return maps
    rng = np.random.default_rng(seed)
    out = maps.copy()
    inside = maps[1] > 0.5
    out[2] = np.clip(maps[2] + rng.normal(0, 0.1, inside.shape), 0, 1) * inside
    if head == "rays":
        out[3:] = np.maximum(maps[3:] * rng.normal(1, 0.15, maps[3:].shape), 0)
    return out


def timed(maps: np.ndarray, cfg, repeat: int) -> tuple[int, float]:
    """(objects found, best CPU seconds of ``separate_objects``)."""
    from unetkit.objects.postprocess import separate_objects

    seconds, found = [], 0
    for _ in range(repeat):
        start = time.process_time()
        found = int(separate_objects(maps, cfg)[1].max())
        seconds.append(time.process_time() - start)
    return found, min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--heads", default="boundary,distance,rays")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import torch

    from unetkit.config import ObjectConfig

    torch.set_num_threads(1)
    print(f"{'head':<9}{'size':>6}{'density':>9}{'maps':>8}{'found':>7}{'true':>7}"
          f"{'cpu s':>8}{'s/MP':>7}")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        for step, density in ((24, "dense"), (44, "sparse")):
            truth = nuclei(size, step)
            for head in args.heads.split(","):
                cfg = ObjectConfig(head=head, min_size=0)
                timed(truth_maps(truth[:64, :64], head), cfg, 1)  # numba compiled
                perfect = truth_maps(truth, head)
                for kind, maps in (("perfect", perfect), ("noisy", noisy(perfect, head))):
                    found, best = timed(maps, cfg, args.repeat)
                    per_mp = best * 1e6 / size**2
                    print(f"{head:<9}{size:>6}{density:>9}{kind:>8}{found:>7}"
                          f"{int(truth.max()):>7}{best:>8.2f}{per_mp:>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
