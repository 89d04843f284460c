"""``make install TORCH_INDEX=...`` installs torch from that index (another CUDA build, or CPU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def install_command(tmp_path: Path, *variables: str) -> str:
    """What ``make install`` would run, for a venv that does not exist yet (``make -n``)."""
    result = subprocess.run(
        ["make", "-n", "install", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_torch_index_is_passed_to_pip_only_when_set(tmp_path: Path) -> None:
    index = "https://download.pytorch.org/whl/cpu"
    assert f"--extra-index-url {index}" in install_command(tmp_path, f"TORCH_INDEX={index}")
    assert "--extra-index-url" not in install_command(tmp_path)
