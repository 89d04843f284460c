"""A tiny convolutional generator family for the serving tests (registered per test)."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_tiny(config: dict[str, Any]) -> nn.Module:
    """Two 3 x 3 convolutions with a tanh: enough arithmetic for runtime-parity checks."""
    width = int(config.get("width", 8))
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 3, 3, padding=1),
        nn.Tanh(),
    )
