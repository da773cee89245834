"""Sharded prediction (``unetkit.infer.shard``): ``torchrun --nproc_per_node 2`` on CPUs (gloo)
writes the same files as one process, byte for byte, with the images read whole shared by pixels
and the strips of an image read by region shared between the ranks; an input that fails on one
rank makes every rank exit with code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit import DataConfig, PredictConfig, save_checkpoint
from unetkit.cli import main
from unetkit.distributed import DistInfo
from unetkit.infer.predict import Predictor
from unetkit.infer.shard import balanced_owners, my_share, strip_share

CLASSES = ["background", "a", "b"]
PALETTE = [[0, 0, 0], [200, 0, 0], [0, 0, 200]]

# torchrun runs this in each rank: it records what the rank predicted, then runs the CLI
DRIVER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from unetkit.infer import outputs, strips

    log = Path(os.environ["SHARD_LOG"]) / f"rank{os.environ['RANK']}.txt"
    write, one = strips.Strips.write, outputs._predict_one

    def logged_write(self, index, tiles):
        with open(log, "a") as f:
            f.write(f"strip {index}\\n")
        write(self, index, tiles)

    def logged_one(predictor, path, out_dir, options):
        with open(log, "a") as f:
            f.write(f"image {path.name}\\n")
        if os.environ.get("CRASH") == f"{os.environ['RANK']} {path.name}":
            raise RuntimeError("a deliberate crash")
        return one(predictor, path, out_dir, options)

    strips.Strips.write, outputs._predict_one = logged_write, logged_one
    from unetkit.cli import main

    sys.exit(main())
    """
)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 80 * np.sin(y / 11.0 + seed)[..., None] * np.cos(x / 15.0)[..., None]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, tiny_model, tiny_checkpoint) -> Path:
    """A tiny random U-Net whose head is centred so that every class wins somewhere."""
    net = tiny_model(None, in_channels=3, out_channels=3)
    pre = DataConfig(channels=3, size=(48, 48), normalize="image")
    path = tmp_path_factory.mktemp("m") / "m.pt"
    save_checkpoint(tiny_checkpoint(net, classes=CLASSES, palette=PALETTE, preprocessing=pre), path)
    probs = Predictor.from_checkpoint(path, PredictConfig(), "cpu").predict_proba(_image(96, 96, 0))
    median = np.median(np.log(np.maximum(probs, 1e-12)).reshape(3, -1), axis=1)
    with torch.no_grad():
        net.head[0].bias -= torch.as_tensor(median, dtype=torch.float32)
    ckpt = tiny_checkpoint(net, classes=CLASSES, palette=PALETTE, preprocessing=pre)
    return save_checkpoint(ckpt, path)


def _torchrun(args: list[str], log: Path, script: Path | None = None, **env: str):
    """``torchrun --standalone --nproc_per_node 2`` of ``script`` or ``-m unetkit``."""
    log.mkdir(exist_ok=True)
    target = [str(script)] if script is not None else ["-m", "unetkit"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", *target, *args, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SHARD_LOG": str(log), **env}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_shares_are_deterministic_and_cover_everything(tmp_path):
    ranks = [DistInfo(r, 3) for r in range(3)]
    # by pixels: the largest first, each to the least loaded rank (ties: lower rank)
    assert balanced_owners([10, 10, 10, 10, 10, 10, 10], 3) == [0, 1, 2, 0, 1, 2, 0]
    assert balanced_owners([100, 10, 10, 10, 10, 60, 50], 3) == [0, 2, 1, 2, 1, 1, 2]
    paths = []
    for i, side in enumerate([400, 50, 50, 50, 300, 60]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((side, side), np.uint8)).save(paths[-1])
    paths.append(tmp_path / "broken.png")
    paths[-1].write_bytes(b"not a png")  # its byte size stands in; predict reports it later
    shares = [my_share(paths, r) for r in ranks]
    assert shares == [{0}, {4}, {1, 2, 3, 5, 6}]  # 160 k px | 90 k px | 11 k px
    assert set().union(*shares) == set(range(7)) and sum(map(len, shares)) == 7
    assert my_share(paths, DistInfo()) == set(range(7))  # one process: every image
    assert [list(strip_share(7, r)) for r in ranks] == [[0, 1], [2, 3], [4, 5, 6]]
    assert [list(strip_share(2, r)) for r in ranks] == [[], [0], [1]]  # more ranks than strips
    assert list(strip_share(5, DistInfo())) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def folder(model_path, tmp_path_factory) -> tuple[Path, list[str], dict[str, bytes]]:
    """5 PNGs and a 700-row TIFF read by region (``--level 0``), the arguments of ``predict``
    (output folder ``OUT``) and the files one process writes."""
    root = tmp_path_factory.mktemp("shard")
    inputs = root / "in"
    inputs.mkdir()
    for i in range(5):
        Image.fromarray(_image(40 + 9 * i, 56 + 5 * i, i)).save(inputs / f"img{i}.png")
    tifffile.imwrite(inputs / "slide.tif", _image(700, 150, 7), tile=(64, 64), compression="zlib")
    args = ["predict", str(model_path), str(inputs), "-o", "OUT", "--level", "0", "--labelme"]
    one = root / "one"
    assert main([a if a != "OUT" else str(one) for a in args] + ["--no-progress"]) == 0
    return root, args, _files(one)


def test_two_ranks_write_the_files_of_one_process(folder, tmp_path):
    """The PNGs shared by pixels, the TIFF's strips of 256 rows shared by rank: every output,
    summary.csv included, equal byte for byte."""
    root, args, expected = folder
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    two = root / "two"  # beside "one": labelme's imagePath is relative to the output folder
    done = _torchrun([a if a != "OUT" else str(two) for a in args], tmp_path / "log", driver)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("6 predicted, 0 skipped (existing), 0 failed") == 1  # rank 0 says
    assert "slide.tif" in expected and "summary.csv" in expected and len(expected) == 23
    assert _files(two) == expected
    logs = [(tmp_path / "log" / f"rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)]
    # by pixels (2240, 2989, 3828, 4757, 5776): img4, img1 | img3, img2, img0
    assert logs[0] == ["image img1.png", "image img4.png", "strip 0"]
    assert logs[1] == ["image img0.png", "image img2.png", "image img3.png", "strip 1", "strip 2"]


def test_two_ranks_write_the_ome_zarr_of_one_process(model_path, tmp_path):
    """``--zarr``: both ranks write strips, rank 0 assembles ``NAME.ome.zarr`` from them; every
    chunk and metadata file equals one process's."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "slide.tif", _image(700, 150, 7), tile=(64, 64), compression="zlib")
    args = ["predict", str(model_path), str(inputs), "-o", "OUT", "--level", "0", "--zarr"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([a if a != "OUT" else str(one) for a in args] + ["--no-progress"]) == 0
    expected = _files(one)
    assert any(k.startswith("slide.ome.zarr/") for k in expected) and "slide.tif" not in expected
    done = _torchrun([a if a != "OUT" else str(two) for a in args], tmp_path / "log")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files(two) == expected


def test_a_crash_on_one_rank_stops_the_run_with_no_half_written_file(folder, tmp_path):
    """Rank 1 raises at its second image: torchrun stops both ranks (non-zero exit), there is
    no summary.csv, and every file written is complete (equal to one process's)."""
    root, args, expected = folder
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    two = root / "crashed"
    argv = [a if a != "OUT" else str(two) for a in args]
    done = _torchrun(argv, tmp_path / "log", driver, CRASH="1 img3.png")
    assert done.returncode != 0 and "a deliberate crash" in done.stderr
    written = {k: v for k, v in _files(two).items() if not k.startswith(".")}  # temps aside
    assert "summary.csv" not in written and "img3.png" not in written
    assert "img1.png" in written  # rank 1's first image, finished before the crash
    assert written == {k: expected[k] for k in written}


def test_a_failure_on_one_rank_fails_every_rank(model_path, tmp_path):
    """Objects and coco.json gathered from both ranks; a broken image (on rank 1) is reported
    and every rank exits with 2, with the same files as one process writes."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(_image(48, 60 + 4 * i, i)).save(inputs / f"img{i}.png")
    (inputs / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ["predict", str(model_path), str(inputs), "-o", "OUT", "--objects", "--coco"]
    one = tmp_path / "one"
    assert main([a if a != "OUT" else str(one) for a in args] + ["--no-progress"]) == 2
    two = tmp_path / "two"
    done = _torchrun([a if a != "OUT" else str(two) for a in args], tmp_path / "log")
    assert done.returncode != 0
    assert done.stdout.count("2 predicted, 0 skipped (existing), 1 failed") == 1
    expected = _files(one)
    assert "coco.json" in expected and "img1.png" not in expected
    assert _files(two) == expected
