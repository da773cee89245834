"""Reliability suite: folder prediction SIGKILLed at random moments, then ``--skip-existing``.

``python -m unetkit predict MODEL IN -o OUT --device cpu`` over 12 images (96x128 grey PNG,
a hand-wired 3-class model, no training) is SIGKILLed 6 times (seed 9): once while starting
(before any output), then each time a random 1..4 new output files after its rerun began
plus 0..20 ms, so kills land between and inside the atomic writes. Each rerun uses
``--skip-existing``; the last one runs to completion.

Figures: 6 kills survived, outputs lost: 0. In three runs of the test, 2 images were
half-written at a kill each time and the kills left 0 to 2 temporary files; the rerun
completed every image and removed every temporary file. Every image's ``NAME.png``,
``NAME_color.png``, ``NAME_overlay.png`` and ``summary.csv`` exist, decode, have the input's
size and equal an uninterrupted run's files
byte for byte. Reproduce: ``.venv/bin/pytest tests/test_reliability_predict.py -q`` (about
12 s on a busy 2-core machine; the subprocesses run with ``OMP_NUM_THREADS=1``).

Bug this file found: a write killed mid-file leaves ``.NAME.unetkit-tmp-XXXXXXXX.png``, and
the rerun kept it, because stale temporary files are only removed after 10 s untouched
(``test_a_rerun_removes_what_a_killed_write_left`` failed before the fix; a rerun now removes
the temporary files of its own outputs once they are all in place, whatever their age).

Mutations tried, each caught: ``--skip-existing`` checking only the mask file (``NAME.png``)
(``test_skip_existing_redoes_an_image_with_a_missing_output`` fails, and the kill test fails
whenever a kill lands between an image's mask and its overlay); removing the end-of-run
cleanup (``test_a_rerun_removes_what_a_killed_write_left`` fails).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import DataConfig, PredictConfig, make_checkpoint, save_checkpoint
from unetkit.cli import main
from unetkit.data.imageio import read_mask
from unetkit.files import TEMP_TAG
from unetkit.infer import Predictor, predict_paths

N_IMAGES, H, W = 12, 96, 128
CLASSES = ["background", "dim", "bright"]
PALETTE = [[0, 0, 0], [0, 0, 255], [255, 255, 0]]
OUTPUTS = ("{}.png", "{}_color.png", "{}_overlay.png")
SEED = 9
KILLS = 6
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: 5x faster on a busy 2-core machine


@pytest.fixture(autouse=True)
def _one_thread():
    """The in-process runs use one thread too (the same arithmetic as the subprocesses)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(folder: Path) -> list[str]:
    """12 grey scenes: a dark background with a dim and a bright rectangle, random places."""
    folder.mkdir()
    rng = np.random.default_rng(SEED)
    names = []
    for i in range(N_IMAGES):
        image = np.full((H, W), 25, np.uint8)
        for level in (128, 230):
            top, left = rng.integers(0, H - 20), rng.integers(0, W - 20)
            image[top : top + rng.integers(8, 40), left : left + rng.integers(8, 60)] = level
        name = f"img{i:02d}"
        Image.fromarray(image).save(folder / f"{name}.png")
        names.append(name)
    return names


@pytest.fixture(scope="module")
def setup(tmp_path_factory, grey_level_model) -> dict:
    root = tmp_path_factory.mktemp("interrupted")
    names = _images(root / "in")
    pre = DataConfig(channels=1, resize="random-crop", size=(32, 32), mean=(0.5,), std=(0.25,))
    ckpt = make_checkpoint(grey_level_model(), classes=CLASSES, palette=PALETTE, preprocessing=pre)
    model = save_checkpoint(ckpt, root / "model.pt")
    return {"root": root, "names": names, "model": model, "inputs": root / "in"}


def _command(setup: dict, out: Path) -> list[str]:
    """The prediction command; small tiles make it slow enough to kill part-way."""
    return [str(setup["model"]), str(setup["inputs"]), "-o", str(out), "--device", "cpu",
            "--no-progress", "--tile", "32"]  # fmt: skip


def _finished(out: Path) -> int:
    """Output files in place (temporary files excluded)."""
    try:
        return sum(1 for name in os.listdir(out) if not name.startswith("."))
    except FileNotFoundError:
        return 0


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if TEMP_TAG in p.name) if out.exists() else []


def _run_killed(setup: dict, out: Path, rng: random.Random, first: bool) -> tuple[bool, int]:
    """One run SIGKILLed at a random moment; (killed, temporary files it left)."""
    args = [sys.executable, "-m", "unetkit", "predict", *_command(setup, out)]
    args += [] if first else ["--skip-existing"]
    before = _finished(out)
    target = before + rng.randint(1, 4)
    delay = rng.uniform(0.0, 0.02)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 60
        if first:  # while importing torch and loading the model: nothing written yet
            time.sleep(rng.uniform(0.2, 0.8))
        else:
            while _finished(out) < target and proc.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError("prediction made no progress in 60 s")
                time.sleep(0.003)
            time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if not killed:
            assert proc.returncode == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return killed, len(_temps(out))


def _check_outputs(setup: dict, out: Path, reference: Path) -> None:
    names = setup["names"]
    expected = {f.format(n) for n in names for f in OUTPUTS} | {"summary.csv"}
    assert {p.name for p in out.iterdir()} == expected  # no temporary file, nothing extra
    assert {p.name for p in reference.iterdir()} == expected
    for name in names:
        mask = read_mask(out / f"{name}.png")
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 1, 2}
        with Image.open(out / f"{name}_color.png") as img:
            img.load()
            assert img.size == (W, H)
        with Image.open(out / f"{name}_overlay.png") as img:
            img.load()
            assert img.size == (W, H)  # the input's size
        for pattern in OUTPUTS:
            file = pattern.format(name)
            assert (out / file).read_bytes() == (reference / file).read_bytes(), file
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == [f"{n}.png" for n in names]
    assert all(sum(int(r[f"{c}_pixels"]) for c in CLASSES) == H * W for r in rows)
    assert (out / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()


@pytest.mark.slow
def test_killed_folder_prediction_resumes_complete(setup, capsys):
    reference = setup["root"] / "reference"
    assert main(["predict", *_command(setup, reference)]) == 0  # uninterrupted
    capsys.readouterr()
    masks = [read_mask(reference / f"{n}.png") for n in setup["names"]]
    assert all(len(np.unique(m)) == 3 for m in masks)  # the model sees all three classes
    out = setup["root"] / "killed"
    rng = random.Random(SEED)
    kills, half_sets, temps_left = 0, 0, 0
    for i in range(KILLS):
        killed, temps = _run_killed(setup, out, rng, first=i == 0)
        kills += killed
        temps_left = temps  # they pile up until a run completes
        have = [sum((out / f.format(n)).exists() for f in OUTPUTS) for n in setup["names"]]
        half_sets += sum(0 < n < len(OUTPUTS) for n in have)
        if i == 0:
            assert _finished(out) == 0  # killed while starting
    print(f"{kills} kills, {half_sets} half-written images, {temps_left} temporary files left")
    assert kills == KILLS
    assert 0 < _finished(out) < 3 * N_IMAGES + 1  # interrupted part-way
    args = [sys.executable, "-m", "unetkit", "predict", *_command(setup, out), "--skip-existing"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    _check_outputs(setup, out, reference)


def _predictor(setup: dict) -> Predictor:
    return Predictor.from_checkpoint(
        setup["model"], PredictConfig(precision="fp32", device="cpu"), device="cpu"
    )


def test_a_rerun_removes_what_a_killed_write_left(setup, tmp_path):
    """A SIGKILL inside ``atomic_path`` leaves a fresh temporary file; the rerun removes it."""
    out = tmp_path / "out"
    inputs = [setup["inputs"] / f"{n}.png" for n in setup["names"][:2]]
    predict_paths(_predictor(setup), inputs, out, progress=False)
    (out / "img01_overlay.png").unlink()  # killed while writing img01's overlay:
    left = [
        out / ".img01_overlay.unetkit-tmp-k1lled0x.png",
        out / ".summary.unetkit-tmp-abc_0123.csv",
    ]
    for path in left:
        path.write_bytes(b"\x89PNG half")
    other = out / ".notes.unetkit-tmp-12345678.txt"  # not an output of this run: left alone
    other.write_bytes(b"")
    report = predict_paths(_predictor(setup), inputs, out, skip_existing=True, progress=False)
    assert [p.name for p in report.skipped] == ["img00.png"]
    assert [p.name for p in report.written] == ["img01.png"]
    assert not any(p.exists() for p in left)
    assert other.exists()
    with Image.open(out / "img01_overlay.png") as img:
        img.load()


def test_skip_existing_redoes_an_image_with_a_missing_output(setup, tmp_path):
    """Killed between an image's mask and its overlay: the rerun predicts that image again."""
    out = tmp_path / "out"
    inputs = [setup["inputs"] / f"{n}.png" for n in setup["names"][:3]]
    predict_paths(_predictor(setup), inputs, out, progress=False)
    (out / "img01_color.png").unlink()
    (out / "img02_overlay.png").unlink()
    report = predict_paths(_predictor(setup), inputs, out, skip_existing=True, progress=False)
    assert [p.name for p in report.skipped] == ["img00.png"]
    assert [p.name for p in report.written] == ["img01.png", "img02.png"]
    assert (out / "img01_color.png").is_file() and (out / "img02_overlay.png").is_file()
