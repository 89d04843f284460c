"""Fixtures shared by the StyleGAN tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stylegan3.official import OfficialModules, official_modules


@pytest.fixture
def official_stubs(tmp_path: Path) -> Iterator[OfficialModules]:
    """NVIDIA's ``torch_utils.persistence`` and ``dnnlib`` stand-ins while a pickle is written."""
    with official_modules(tmp_path / "stubs") as stubs:
        yield stubs
