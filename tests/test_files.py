"""Atomic writes: all-or-nothing files and folders with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from unetkit.files import atomic_dir, atomic_path, write_text


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
