"""Atomic writes: all-or-nothing files and folders with ordinary permissions."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from unetkit.files import (
    TEMP_NAME,
    TEMP_TAG,
    atomic_dir,
    atomic_path,
    clean_stale_temps,
    write_csv,
    write_text,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "hello")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "folder") == 0o755


def test_failed_write_leaves_previous_content_and_no_temp_file(tmp_path):
    write_text(tmp_path / "a.txt", "v1")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert (tmp_path / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_folder_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "part").write_text("x")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_non_empty_folder_is_not_replaced_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("k")
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new").write_text("n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temporary_names_follow_one_recognisable_scheme(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert TEMP_NAME.fullmatch(tmp.name) and tmp.name.startswith(f".curves{TEMP_TAG}")
        assert tmp.suffix == ".png"  # writers that look at the extension still work
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "ds") as tmp:
        assert TEMP_NAME.fullmatch(tmp.name) and tmp.name.startswith(f".ds{TEMP_TAG}")
    with atomic_dir(tmp_path / "ds", overwrite=True) as tmp:  # replaces the old folder
        (tmp / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "ds"]
    for name in ("curves.png", ".curves.png", ".curves.abcd1234.png", f"curves{TEMP_TAG}a.png"):
        assert not TEMP_NAME.fullmatch(name)


def _old(path):
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    return path


def test_clean_stale_temps_removes_only_old_files_of_our_naming(tmp_path):
    stale = tmp_path / f".curves{TEMP_TAG}k3j4h5g6.png"
    stale.write_bytes(b"")
    _old(stale)
    stale_dir = tmp_path / f".ds{TEMP_TAG}abcdefgh"  # folders are never removed: a folder's
    (stale_dir / "images").mkdir(parents=True)  # time says nothing of writes deeper inside
    _old(stale_dir)
    fresh = tmp_path / f".last{TEMP_TAG}aaaaaaaa.pt"  # maybe another process writing now
    fresh.write_bytes(b"half")
    keep = [tmp_path / n for n in (".curves.k3j4h5g6.png", "notes.txt", f"x{TEMP_TAG}abcdefgh")]
    for path in keep:
        path.write_text("mine")
        _old(path)
    (tmp_path / "panels").mkdir()
    nested = tmp_path / "panels" / f".epoch_0001{TEMP_TAG}zzzzzzzz.png"
    nested.write_bytes(b"")
    _old(nested)
    removed = clean_stale_temps(tmp_path)
    assert removed == [stale]
    assert (
        fresh.exists()
        and stale_dir.is_dir()
        and all(p.read_text() == "mine" for p in keep)
        and nested.exists()
    )
    assert clean_stale_temps(tmp_path, recursive=True) == [nested]
    assert clean_stale_temps(tmp_path / "missing") == []


def test_clean_stale_temps_of_targets_removes_theirs_whatever_their_age(tmp_path):
    """``targets`` with ``min_age=0``: the temporaries of those files' writes, young or old, and
    nothing else (another target's, a folder, a link)."""
    mine = [tmp_path / f".a{TEMP_TAG}aaaaaaaa.png", tmp_path / f".a{TEMP_TAG}bbbbbbbb.tif"]
    other = tmp_path / f".b{TEMP_TAG}cccccccc.png"
    for path in [*mine, other]:
        path.write_bytes(b"half")
    folder = tmp_path / f".a{TEMP_TAG}dddddddd"
    folder.mkdir()
    link = tmp_path / f".a{TEMP_TAG}eeeeeeee.png"
    link.symlink_to(other)
    future = time.time() + 3600  # a clock ahead of ours: still removed
    os.utime(mine[1], (future, future))
    removed = clean_stale_temps(tmp_path, min_age=0, targets=[tmp_path / "a.png"])
    assert removed == mine
    assert other.exists() and folder.is_dir() and link.is_symlink()


def test_write_csv_writes_these_bytes(tmp_path):
    """One CSV dialect for every table unetkit writes: header, \\n line ends, quotes only
    where needed, None and missing values empty, the header alone without rows."""
    rows = [
        {"image": "a,b.png", "n": 4, "iou": 0.6666666666666666, "note": None},
        {"image": 'say "hi"', "n": 0, "iou": 1.0},
    ]
    write_csv(tmp_path / "t.csv", rows, ["image", "n", "iou", "note"])
    assert (tmp_path / "t.csv").read_bytes() == (
        b'image,n,iou,note\n"a,b.png",4,0.6666666666666666,\n"say ""hi""",0,1.0,\n'
    )
    write_csv(tmp_path / "empty.csv", [], ["a", "b"])
    assert (tmp_path / "empty.csv").read_bytes() == b"a,b\n"
    with pytest.raises(ValueError, match="not in fieldnames"):
        write_csv(tmp_path / "bad.csv", [{"a": 1, "z": 2}], ["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "t.csv"]


def test_a_killed_write_leaves_a_temp_that_the_next_start_removes(tmp_path):
    code = (
        "import sys, time; from unetkit.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half'); print(tmp.name, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "curves.png")],
        stdout=subprocess.PIPE,
        text=True,
    )
    name = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # what a SIGKILL leaves behind
    assert clean_stale_temps(tmp_path, min_age=0) == [tmp_path / name]
    assert list(tmp_path.iterdir()) == []
