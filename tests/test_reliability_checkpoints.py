"""Reliability suite: untrusted model files, and checkpoints that are never half-written.

Figures this file establishes, for the docs' Reliability page (docs/reliability.md)
(reproduce with ``.venv/bin/pytest -q tests/test_reliability_checkpoints.py``):

- untrusted model files: 21 hostile or broken files (5 pickles armed to write a marker file
  or run ``touch``, each checked to fire when loaded unsafely; a checkpoint truncated at
  10/50/90 %, empty, a text file, a folder, a foreign ``{"weight": tensor}`` file, a future
  format version, weights that do not fit their config, a state_dict of lists, a config
  declaring a 500 M-parameter model with 7 k weights, a 65536x65536 training size; a text
  file, an empty, a truncated and a metadata-less ``.onnx``) through every command that loads
  a model (``predict``, ``info``, ``evaluate``, ``export``, ``train --resume``): 105 runs, each
  exit 2 with one line naming the file, 0 tracebacks, 0 code executed (the marker never
  written), 0 outputs written, the run folder byte-identical;
  peak RSS of the model-bomb file through ``info`` / ``predict`` / ``export`` under 1 GiB;
- ``info`` describes an exported ``.onnx`` from its metadata (it printed ``KeyError: 101``);
- kill test: a child saving two alternating 1 MiB checkpoints in a loop is SIGKILLed at 200
  random moments: 200 kills survived, 0 lost (every time the file loads and is exactly one of
  the two states); about half the kills land inside a save (they leave a temporary file:
  asserted > 0, else the test proves nothing); about 7 s;
- disk full (ENOSPC at the rename, and half-way through the write) and permission denied:
  the previous checkpoint stays byte-identical and no temporary file is left.

Bugs these tests found (each test failed before its fix in ``checkpoint.py``, ``summary.py``,
``export.py``, ``infer/backends.py``):

- a text file as a checkpoint (``info``, ``export``, ``predict``): ``error: KeyError: 101``,
  exit 1; ``info`` on a real ``.onnx``: "it would run code when unpickled" (wrong, and exit 2
  for a valid file) (``test_untrusted_model_files``, ``test_info_describes_an_onnx_export``);
- torch's page-long refusal and its UserWarning printed for pickles of protocol 4
  (``test_untrusted_model_files``: one line, no "Warning");
- a config declaring a huge model was built before its weights were compared: 2 GiB RSS for a
  7 kB file (``test_model_bomb_rss``); a state_dict that is not tensors or an absurd training
  size went through (``test_untrusted_model_files``);
- ``info`` built the model without catching a weights/config mismatch (exit 1).

Mutations each guard kills (tried on a copy of ``src``, not in place):

- ``save_checkpoint`` writing in place (``torch.save(ckpt.to_dict(), path)``) instead of
  through ``atomic_path`` -> ``test_checkpoints_survive_200_random_sigkills`` (a truncated
  file fails to load within the first kills) and ``test_disk_full_mid_write_...``;
- ``files.atomic_path`` without the ``unlink`` on failure -> ``test_disk_full_...`` (a
  temporary file left);
- ``build_model`` without the meta-device shape check -> ``test_model_bomb_rss``;
- ``_read_torch_file`` with ``weights_only=False`` -> ``test_untrusted_model_files`` (marker).

Also fixed (files.atomic_path): a full disk or a read-only folder raised a bare ``OSError``
instead of a one-line ``UnetkitError`` saying the previous file is unchanged
(``test_disk_full_or_read_only_says_so_in_one_line``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PEAK_RSS
from unetkit import DataConfig, build_model, save_checkpoint
from unetkit.checkpoint import FORMAT, Checkpoint, load_checkpoint
from unetkit.cli import main
from unetkit.config import ModelConfig, TrainConfig
from unetkit.errors import UnetkitError

try:  # tests/ as a package or as a plain folder on sys.path
    from .corrupt import run_cli as _run
except ImportError:
    from corrupt import run_cli as _run

CLASSES = ["background", "cell", "nucleus"]
GIB = 1 << 30
KILLS = 200


# -- armed pickles -------------------------------------------------------------------------------
class _WritesMarker:
    """Unpickling this opens (creates) the marker file: ``open(marker, "w")``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    """Unpickling this runs ``touch marker`` through ``os.system``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, tiny_checkpoint) -> dict:
    """Every hostile / broken model file, a good checkpoint, its ONNX export and a dataset."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "MARKER"
    good = save_checkpoint(tiny_checkpoint(), root / "good.pt")
    files: dict[str, Path] = {}

    def torch_file(name: str, obj, **kwargs) -> None:
        torch.save(obj, root / name, **kwargs)
        files[name] = root / name

    header = {"format": FORMAT, "format_version": 1}
    torch_file("pickle_open.pt", {**header, "state_dict": _WritesMarker(str(marker))})
    torch_file("pickle_legacy.pt", _RunsShell(str(marker)), _use_new_zipfile_serialization=False)
    torch_file("pickle_nested.pt", {**header, "train_state": {"x": [_WritesMarker(str(marker))]}})
    for protocol in (2, 5):
        (root / f"pickle_p{protocol}.pt").write_bytes(
            pickle.dumps(_RunsShell(str(marker)), protocol=protocol)
        )
        files[f"pickle_p{protocol}.pt"] = root / f"pickle_p{protocol}.pt"
    armed = sorted(files)
    data = good.read_bytes()
    for fraction in (10, 50, 90):
        (root / f"trunc{fraction}.pt").write_bytes(data[: len(data) * fraction // 100])
        files[f"trunc{fraction}.pt"] = root / f"trunc{fraction}.pt"
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "folder.pt").mkdir()
    files.update({n: root / n for n in ("empty.pt", "text.pt", "folder.pt")})
    torch_file("foreign.pt", {"weight": torch.zeros(3, 3)})
    future = tiny_checkpoint().to_dict()
    future["format_version"] = 99
    torch_file("future.pt", future)
    other = build_model("milesial", base_width=8, depth=2, in_channels=3, out_channels=3)
    mismatched = tiny_checkpoint().to_dict()
    mismatched["state_dict"] = other.state_dict()
    torch_file("mismatched.pt", mismatched)
    not_tensors = tiny_checkpoint().to_dict()
    not_tensors["state_dict"] = {"w": [1, 2, 3]}
    torch_file("not_tensors.pt", not_tensors)
    bomb = tiny_checkpoint().to_dict()  # 500 M parameters declared, 7 k stored
    bomb["model_config"] = ModelConfig(in_channels=3, out_channels=3, base_width=256).to_dict()
    torch_file("model_bomb.pt", bomb)
    huge = tiny_checkpoint().to_dict()
    huge["preprocessing"] = DataConfig(channels=3, size=(65536, 65536)).to_dict()
    torch_file("size_bomb.pt", huge)
    assert main(["export", str(good), "-o", str(root / "good.onnx")]) == 0
    onnx = (root / "good.onnx").read_bytes()
    (root / "trunc.onnx").write_bytes(onnx[: len(onnx) // 2])
    (root / "empty.onnx").write_bytes(b"")
    (root / "text.onnx").write_text("hello\n")
    _onnx_without_metadata(root / "plain.onnx")
    files.update({n: root / n for n in ("trunc.onnx", "empty.onnx", "text.onnx", "plain.onnx")})
    # the pickles are armed: loaded unsafely, each one writes the marker
    for name in armed:
        with contextlib.suppress(Exception):  # the payload runs before any type check fails
            torch.load(files[name], weights_only=False)
        assert marker.exists(), f"{name} is not armed"
        marker.unlink()
    dataset = root / "ds"
    for sub in ("images", "masks"):
        (dataset / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(
            dataset / "images" / f"a{i}.png"
        )
        Image.fromarray((rng.random((24, 40)) > 0.5).astype(np.uint8)).save(
            dataset / "masks" / f"a{i}.png"
        )
    (dataset / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {"root": root, "marker": marker, "good": good, "files": files, "armed": armed}


def _onnx_without_metadata(path: Path) -> None:
    """A valid ONNX file that unetkit did not write (no ``unetkit.*`` metadata)."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.rand(1, 3, 8, 8),), buffer, dynamo=False)
    path.write_bytes(buffer.getvalue())


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _resume_folder(run: Path, model: Path, dataset: Path) -> None:
    run.mkdir()
    cfg = TrainConfig(dataset=str(dataset), run_dir=str(run), epochs=1)
    (run / "config.json").write_text(cfg.pretty() + "\n")
    if model.is_dir():
        (run / "last.pt").mkdir()
    else:
        shutil.copyfile(model, run / "last.pt")


# -- untrusted model files -----------------------------------------------------------------------
def test_untrusted_model_files(hostile, tmp_path, capsys, caplog):
    """Every hostile file through every command that loads a model: one line, exit 2."""
    marker, files = hostile["marker"], hostile["files"]
    dataset = hostile["root"] / "ds"
    image = dataset / "images" / "a0.png"
    assert len(files) >= 20
    runs = 0
    for name, path in files.items():
        out = tmp_path / name.replace(".", "_")
        commands = {
            "info": (["info", str(path)], path),
            "predict": (["predict", str(path), str(image), "-o", str(out / "p")], path),
            "evaluate": (["evaluate", str(path), str(dataset), "-o", str(out / "e")], path),
            "export": (["export", str(path), "-o", str(out / "x.onnx")], path),
        }
        run = out / "run"
        out.mkdir()
        _resume_folder(run, path, dataset)
        before = _tree(run)
        resume = ["train", str(dataset), "--resume", str(run), "--device", "cpu"]
        commands["train --resume"] = (resume, run)  # RUN/last.pt or "RUN: ... (no last.pt)"
        for command, (argv, named_file) in commands.items():
            code, lines = _run(argv + (["--no-progress"] if command == "predict" else []),
                               capsys, caplog)  # fmt: skip
            runs += 1
            text = "\n".join(lines)
            where = f"{command} {name}"
            assert code == 2, (where, code, lines)
            assert "Traceback" not in text and "Warning" not in text, (where, text)
            errors = [line for line in lines if line.startswith("error:")]
            assert len(errors) == 1 and str(named_file) in errors[0], (where, lines)
            if command == "train --resume":
                assert "last.pt" in errors[0], (where, lines)
            assert not marker.exists(), f"{where}: code ran"
            assert sorted(p.name for p in out.iterdir()) == ["run"], (where, "wrote outputs")
            assert _tree(run) == before, (where, "changed the run folder")
            if name in hostile["armed"]:
                assert "refused" in errors[0] and "nothing was run" in errors[0], errors[0]
    assert runs >= 100


def test_info_describes_an_onnx_export(hostile, capsys, caplog):
    code, lines = _run(["info", str(hostile["root"] / "good.onnx")], capsys, caplog)
    assert code == 0, lines
    text = "\n".join(lines)
    assert "0:background, 1:cell, 2:nucleus" in text and '"size": [32, 32]' in text
    assert "KeyError" not in text


@pytest.mark.slow
def test_model_bomb_rss(hostile, tmp_path):
    """A 7 kB file declaring a 500 M-parameter model: refused without building it."""
    path = hostile["files"]["model_bomb.pt"]
    image = hostile["root"] / "ds" / "images" / "a0.png"
    argvs = [
        ["info", str(path)],
        ["predict", str(path), str(image), "-o", str(tmp_path / "p")],
        ["export", str(path), "-o", str(tmp_path / "x.onnx")],
    ]
    script = textwrap.dedent(
        """
        import json, sys
        from unetkit.cli import main
        codes = [main(argv) for argv in json.loads(sys.argv[1])]
        {peak_rss}
        print(f"codes={codes} peak_rss={peak}", file=sys.stderr)
        """
    ).replace("{peak_rss}", PEAK_RSS)
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    found = re.search(r"codes=\[(.*)\] peak_rss=(\d+)", text)
    assert found, text[-3000:]
    assert found.group(1) == "2, 2, 2", text
    assert int(found.group(2)) < GIB, f"peak RSS {int(found.group(2)) / GIB:.2f} GiB"
    assert text.count("weights do not match the stored config") == 3, text
    assert not (tmp_path / "p").exists() and not (tmp_path / "x.onnx").exists()


# -- never half-written --------------------------------------------------------------------------
ZYGOTE = r"""
import os, sys
import torch
torch.set_num_threads(1)
from unetkit.card import ModelCard
from unetkit.checkpoint import Checkpoint, save_checkpoint
from unetkit.config import DataConfig, ModelConfig

target = sys.argv[1]


def state(value):  # 1 MiB of weights, every one equal to `value`
    return {f"w{i}": torch.full((256, 256), float(value)) for i in range(4)}


ckpts = [
    Checkpoint(ModelCard(ModelConfig(), ["a", "b"], [[0, 0, 0], [9, 9, 9]], DataConfig()),
               state(v), extra={"which": v})
    for v in (1, 2)
]
save_checkpoint(ckpts[0], target)
print("ready", flush=True)
for _ in sys.stdin:  # one line: fork a child that saves forever, until it is killed
    pid = os.fork()
    if pid == 0:
        i = 1
        while True:
            save_checkpoint(ckpts[i % 2], target)
            i += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def _which(path: Path) -> int:
    """1 or 2: which of the two states the file holds (anything else fails the test)."""
    ckpt = load_checkpoint(path)
    which = ckpt.extra["which"]
    assert which in (1, 2)
    for name, tensor in ckpt.state_dict.items():
        # numpy, not torch: a torch op wakes its thread pool, slow on a busy machine
        assert tensor.shape == (256, 256) and bool((tensor.numpy() == which).all()), name
    return which


@pytest.mark.slow
def test_checkpoints_survive_200_random_sigkills(tmp_path):
    """SIGKILL a saving process 200 times: the file always loads, as the old or the new one."""
    shm = Path("/dev/shm")  # RAM: fsync returns at once, so 200 kills fit in a few seconds
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else None
    try:
        _kill_loop((base or tmp_path) / "run")
    finally:
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


def _kill_loop(folder: Path) -> None:
    import signal

    folder.mkdir()
    target = folder / "last.pt"
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    rng = random.Random(0)
    seen, mid_save, started = {1: 0, 2: 0}, 0, time.monotonic()
    try:
        assert zygote.stdout.readline().strip() == "ready"
        for _ in range(KILLS):
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            seen[_which(target)] += 1
            leftovers = [p for p in folder.iterdir() if p.name != "last.pt"]
            mid_save += bool(leftovers)  # a temporary file: the kill landed inside a save
            for p in leftovers:
                p.unlink()
    finally:
        zygote.kill()
        zygote.wait()
    elapsed = time.monotonic() - started
    assert sum(seen.values()) == KILLS  # 200 kills survived, 0 lost
    assert seen[1] and seen[2], seen  # the child really alternated
    assert mid_save > 0, "no kill landed during a save: the test proves nothing"
    print(f"{KILLS} kills survived, {mid_save} mid-save, {seen}, {elapsed:.1f} s")  # no time
    # assertion: a loaded CI machine may take longer, and speed is a benchmark's business


def _save_pair(folder: Path, tiny_checkpoint) -> tuple[Path, bytes, Checkpoint]:
    path = save_checkpoint(tiny_checkpoint(), folder / "last.pt")
    newer = tiny_checkpoint(extra={"epoch": 2})
    return path, path.read_bytes(), newer


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_full(obj, target, *args, **kwargs):
    """torch.save that fills the disk half-way through writing ``target``."""
    Path(target).write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def _read_only(monkeypatch, folder: Path) -> None:
    """A folder where nothing can be created: chmod, or (root ignores modes) a patched mkstemp."""
    if os.geteuid() == 0:
        monkeypatch.setattr(tempfile, "mkstemp", _denied)
    else:
        folder.chmod(0o555)


FAILURES = {
    "rename ENOSPC": lambda mp, folder: mp.setattr(os, "replace", _no_space),
    "write ENOSPC": lambda mp, folder: mp.setattr(torch, "save", _half_then_full),
    "read-only folder": _read_only,
}


@pytest.mark.parametrize("failure", FAILURES)
def test_disk_full_or_read_only_keeps_the_previous_checkpoint(
    failure, tmp_path, monkeypatch, tiny_checkpoint
):
    path, before, newer = _save_pair(tmp_path, tiny_checkpoint)
    with monkeypatch.context() as mp:
        FAILURES[failure](mp, tmp_path)
        with pytest.raises((OSError, UnetkitError)):
            save_checkpoint(newer, path)
    tmp_path.chmod(0o755)
    assert path.read_bytes() == before  # byte-identical
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left
    assert load_checkpoint(path).extra == {}


@pytest.mark.parametrize("failure", FAILURES)
def test_disk_full_or_read_only_says_so_in_one_line(
    failure, tmp_path, monkeypatch, tiny_checkpoint
):
    path, _, newer = _save_pair(tmp_path, tiny_checkpoint)
    with monkeypatch.context() as mp:
        FAILURES[failure](mp, tmp_path)
        with pytest.raises(UnetkitError) as info:
            save_checkpoint(newer, path)
    tmp_path.chmod(0o755)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert re.search("no space|permission", message, re.I) and "unchanged" in message
