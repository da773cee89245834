"""train/rundir.py: the run folder: resume refusals, a moved run, what a failed start leaves
and what is removed of it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training import TINY, tiny_config, tiny_run

import unetkit
from unetkit import TrainConfig, UnetkitError, load_checkpoint
from unetkit.cli import main
from unetkit.train.rundir import (
    RESUMABLE_CHANGES,
    check_resumable,
    check_run_dir,
    discard_failed_start,
    failed_start,
    resume_differences,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_resume_needs_a_checkpoint_and_the_same_config(dataset, tmp_path, capsys, tiny_dataset):
    assert main(["train", str(dataset), "--resume", str(tmp_path / "nothing"), *TINY[:0]]) == 2
    assert "no config.json" in capsys.readouterr().err
    run = tmp_path / "run"
    assert tiny_run(dataset, run) == 0
    assert main(["train", str(dataset), "--resume", str(run), "--lr", "0.5"]) == 2
    assert "cannot change in a resumed run: --lr" in capsys.readouterr().err
    other = tiny_dataset(tmp_path / "other", n=7)
    assert main(["train", str(other), "--resume", str(run)]) == 2
    assert "classes or image stems differ" in capsys.readouterr().err
    (run / "last.pt").unlink()
    assert main(["train", str(dataset), "--resume", str(run)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_of_a_moved_run_writes_only_into_the_given_folder(dataset, tmp_path, capsys):
    """Bug 9.3: config.json stores the absolute run_dir and dataset; a copied run folder and
    moved data must resume in place, never in the original folder."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    old = tmp_path / "old"
    assert tiny_run(data, old) == 0
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    new = tmp_path / "new"
    shutil.copytree(old, new)
    moved = tmp_path / "moved-data"
    data.rename(moved)
    capsys.readouterr()
    assert main(["train", str(moved), "--resume", str(new), "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert str(old) not in err
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == before
    assert load_checkpoint(new / "last.pt").train_state["epoch"] == 2
    state = load_checkpoint(new / "last.pt").train_state
    saved = state["config"]
    assert Path(saved["run_dir"]) == new and Path(saved["dataset"]) == moved
    assert state["data"]["dataset"] == str(moved.resolve())  # where `export --int8` looks


def test_resume_refuses_flags_it_would_drop(dataset, tmp_path, capsys):
    """Bug 9.10: --resume --no-augment was silently dropped."""
    run = tmp_path / "run"
    assert tiny_run(dataset, run) == 0
    capsys.readouterr()
    assert main(["train", str(dataset), "--resume", str(run), "--no-augment"]) == 2
    assert "augment" in capsys.readouterr().err


def test_failed_start_leaves_no_run_folder_behind(dataset, tmp_path, capsys):
    """Bug 9.9: a bad mask found late left RUN_DIR/config.json, blocking the retry."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = np.zeros((40, 40), np.uint8)
    bad[5:9, 5:9] = 7  # a value outside the 3 classes of the classes file
    (data / "classes.txt").write_text("background\nsquare\ndisc\n")
    Image.fromarray(bad).save(data / "masks" / "03.png")
    run = tmp_path / "run"
    assert tiny_run(data, run) == 2
    err = capsys.readouterr().err
    assert "03.png" in err and "Traceback" not in err
    assert not run.exists() or not any(run.iterdir())
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(data / "masks" / "03.png")
    assert tiny_run(data, run) == 0  # the retry is not refused


def test_failure_after_start_removes_what_a_fresh_run_wrote(dataset, tmp_path, monkeypatch):
    fit_module = importlib.import_module("unetkit.train.fit")

    def boom(*a, **kw):
        raise UnetkitError("simulated failure in the first epoch")

    monkeypatch.setattr(fit_module, "train_one_epoch", boom)
    run = tmp_path / "run"
    with pytest.raises(UnetkitError, match="simulated"):
        unetkit.fit(tiny_config(dataset, run))
    assert not run.exists() or not any(run.iterdir())


def test_a_start_killed_before_its_first_checkpoint_can_be_retried(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # what a SIGKILL before the first last.pt leaves
    # killed while writing its first best.pt: the temp file is seconds old when the start is
    # retried (the kill-and-resume test met this about one run in five: "not empty", exit 2)
    (run / ".best.unetkit-tmp-ssb3fugj.tmp").write_bytes(b"")
    assert main(["train", str(dataset), "--resume", str(run)]) == 2
    assert "run it again without --resume" in capsys.readouterr().err
    assert tiny_run(dataset, run) == 0
    assert not list(run.glob(".*unetkit-tmp*"))
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "config.json").write_text("{}")
    (tmp_path / "user" / "notes.txt").write_text("mine")  # not only unetkit's files: refused
    assert tiny_run(dataset, tmp_path / "user") == 2
    assert "not empty" in capsys.readouterr().err


# -- the rules, one by one ----------------------------------------------------------------------
def test_resume_differences_name_what_a_resumed_run_may_not_change():
    saved = {"lr": 0.1, "epochs": 5, "run_dir": "/a", "seed": 0}
    current = {"lr": 0.2, "epochs": 9, "run_dir": "/b", "seed": 0, "ema": 0.9}
    assert resume_differences(saved, current) == ["ema: None -> 0.9", "lr: 0.1 -> 0.2"]
    assert set(RESUMABLE_CHANGES) >= {"epochs", "time_budget", "run_dir", "dataset"}


def test_a_failed_start_is_only_what_a_run_writes_before_its_first_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert not failed_start(run)  # no folder
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "panels").mkdir()
    (run / "panels" / "epoch_0001.png").write_bytes(b"")
    (run / ".best.unetkit-tmp-ssb3fugj.tmp").write_bytes(b"")  # a write cut short
    assert failed_start(run)
    (run / "notes.txt").write_text("mine")
    assert not failed_start(run)  # someone else's file: not a failed start
    discard_failed_start(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # only unetkit's files went
    (run / "notes.txt").unlink()
    (run / "config.json").write_text("{}")
    discard_failed_start(run)
    assert not run.exists()  # empty: removed
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "last.pt").write_bytes(b"")
    assert not failed_start(run)
    discard_failed_start(run)  # a run with a checkpoint is never touched
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "last.pt"]


def test_check_resumable_refuses_other_data_and_other_settings(tmp_path):
    cfg = TrainConfig(classes=("background", "cell"), lr=0.1)
    data = {"classes": ["background", "cell"], "train": ["a", "b"], "val": ["c"]}
    state = {"config": cfg.to_dict(), "data": data}
    check_resumable(state, cfg, ["a", "b"], ["c"], tmp_path)  # the same: no error
    with pytest.raises(UnetkitError, match="classes or image stems differ"):
        check_resumable(state, cfg, ["a"], ["b", "c"], tmp_path)
    with pytest.raises(UnetkitError, match=r"lr: 0\.1 -> 0\.5"):
        check_resumable(state, cfg.replace(lr=0.5), ["a", "b"], ["c"], tmp_path)
    with pytest.raises(UnetkitError, match="classes or image stems differ"):  # bands now
        check_resumable(state, cfg, ["a", "b"], ["c"], tmp_path, {"a": (0, 4, 0, 2)})


def test_check_run_dir_takes_an_empty_folder_and_refuses_a_full_one(tmp_path):
    assert check_run_dir(tmp_path / "new", resume=False, overwrite=False) is None
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(UnetkitError, match="not empty"):
        check_run_dir(tmp_path / "full", resume=False, overwrite=False)
    assert check_run_dir(tmp_path / "full", resume=False, overwrite=True) is None
    with pytest.raises(UnetkitError, match=r"nothing to resume \(no last.pt\)$"):
        check_run_dir(tmp_path / "full", resume=True, overwrite=False)
