"""CLI basics: the models table, info, and error handling (one line, exit code 2)."""

from __future__ import annotations

import subprocess
import sys

import torch

from unetkit import DataConfig, build_model
from unetkit.checkpoint import make_checkpoint, save_checkpoint
from unetkit.cli import main


def test_models_table(capsys):
    assert main(["models", "--size", "572"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["paper"][1:4] == ["31,030,658", "1->2", "388x388"]
    assert lines["milesial"][1] == "31,037,698"
    assert lines["reflect"][3] == "illegal"
    assert lines["reflect"][5] == "560/576"
    assert float(lines["paper"][4]) > 100  # GFLOPs of the paper's network on a 572 tile


def test_info(tmp_path, capsys):
    model = build_model("paper", base_width=4, depth=2)
    ckpt = make_checkpoint(
        model,
        classes=["background", "membrane"],
        palette=[[0, 0, 0], [255, 0, 0]],
        preprocessing=DataConfig(),
        preset="paper",
        train_state={"epoch": 7, "step": 70},
    )
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0:background, 1:membrane" in out
    assert '"epoch": 7' in out
    assert f"{model.num_parameters():,}" in out


def test_bad_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ") and "bad.pt" in err


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unetkit", "info", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "missing.pt: no such checkpoint file" in proc.stderr


def test_import_has_no_side_effects():
    code = (
        "import sys, logging; import unetkit; "
        "assert not logging.getLogger().handlers; "
        "assert 'matplotlib' not in sys.modules; assert 'cv2' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr
