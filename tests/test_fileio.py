"""Atomic writes: all or nothing, and files that look like any other file afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.common.fileio import atomic_open, atomic_write_text, current_umask


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "shared.txt"
    atomic_write_text(path, "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert os.access(path, os.R_OK)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]
