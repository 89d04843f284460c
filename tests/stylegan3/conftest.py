"""Fixtures shared by the StyleGAN tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from src.stylegan3 import precision
from tests.stylegan3.official import OfficialModules, official_modules


@pytest.fixture
def official_stubs(tmp_path: Path) -> Iterator[OfficialModules]:
    """NVIDIA's ``torch_utils.persistence`` and ``dnnlib`` stand-ins while a pickle is written."""
    with official_modules(tmp_path / "stubs") as stubs:
        yield stubs


@pytest.fixture
def fp16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let fp16 layers compute in float16 on the CPU, as they do on CUDA (CPU float16
    convolutions exist in current torch; the reference enables float16 on CUDA only)."""
    monkeypatch.setattr(precision, "FP16_DEVICE_TYPES", {"cuda", "cpu"})
