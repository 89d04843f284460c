"""CycleGAN's ResNet generator (Johnson et al. 2016, as configured by Zhu et al. 2017).

7x7 conv (reflect pad 3) -> two stride-2 3x3 convs (64 -> 128 -> 256) -> N residual blocks at
256 channels -> two stride-2 transposed 3x3 convs back to 64 -> reflect pad 3 + 7x7 conv -> Tanh.
``resnet_9blocks`` is the 256 px default, ``resnet_6blocks`` the 128 px one.

Our modules have names (``stem``, ``down``, ``blocks``, ``up``, ``head``); the reference keeps
the same layers in one flat ``nn.Sequential``. While building, every layer with weights records
its reference path in ``reference_paths`` (our module path -> reference module path), which the
shared key mapping turns into a state-dict mapping both ways.
"""

from __future__ import annotations

import torch
from torch import nn

from src.common.errors import UserError
from src.pix2pix.networks import norm_layer

PADDINGS = ("reflect", "replicate", "zero")
DOWNSAMPLINGS = 2


def _norm(norm: str, channels: int) -> nn.Module:
    """pix2pix's norm layer, or ``Identity`` for ``none`` (it holds an index in the reference)."""
    layer = norm_layer(norm, channels)
    return nn.Identity() if layer is None else layer


def _padding_layer(padding: str, amount: int) -> nn.Module | None:
    """The explicit padding layer for ``padding`` (None for ``zero``: the conv pads itself)."""
    if padding == "reflect":
        return nn.ReflectionPad2d(amount)
    if padding == "replicate":
        return nn.ReplicationPad2d(amount)
    if padding == "zero":
        return None
    raise UserError(f"padding: unknown '{padding}'; use one of {', '.join(PADDINGS)}")


class ResidualBlock(nn.Module):
    """``x + body(x)``; body = pad, 3x3 conv, norm, ReLU, (dropout 0.5), pad, 3x3 conv, norm."""

    def __init__(self, channels: int, norm: str, padding: str, dropout: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for second in (False, True):
            pad = _padding_layer(padding, 1)
            if pad is not None:
                layers.append(pad)
            conv_padding = 1 if pad is None else 0
            layers += [
                nn.Conv2d(channels, channels, 3, padding=conv_padding, bias=norm == "instance"),
                _norm(norm, channels),
            ]
            if not second:
                layers.append(nn.ReLU(True))
                if dropout:
                    layers.append(nn.Dropout(0.5))
        # The reference calls this Sequential ``conv_block``; the index inside is the same.
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's input plus its residual."""
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image -> image at the same size (a multiple of 4), values in [-1, 1]."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        padding: str = "reflect",
        dropout: bool = False,
    ) -> None:
        """``norm``: instance, batch or none (pix2pix's norms); convs before a norm have a bias
        only with instance norm, as in the reference."""
        super().__init__()
        bias = norm == "instance"
        if n_blocks < 0:
            raise UserError(f"n_blocks: must be at least 0, got {n_blocks}")
        _padding_layer(padding, 1)
        self.reference_paths: dict[str, str] = {}
        index = 0

        def record(ours: str, count: int) -> None:
            """Our layer ``ours`` sits at reference index ``index``; skip ``count`` entries."""
            nonlocal index
            if ours:
                self.reference_paths[ours] = f"model.{index}"
            index += count

        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        )
        record("", 1)
        record("stem.1", 1)
        record("stem.2", 2)
        down: list[nn.Module] = []
        for level in range(DOWNSAMPLINGS):
            channels = ngf * 2**level
            down += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=bias),
                _norm(norm, channels * 2),
                nn.ReLU(True),
            ]
            record(f"down.{3 * level}", 1)
            record(f"down.{3 * level + 1}", 2)
        self.down = nn.Sequential(*down)
        width = ngf * 2**DOWNSAMPLINGS
        self.blocks = nn.Sequential(
            *(ResidualBlock(width, norm, padding, dropout) for _ in range(n_blocks))
        )
        for block in range(n_blocks):
            record(f"blocks.{block}", 1)
        up: list[nn.Module] = []
        for level in range(DOWNSAMPLINGS, 0, -1):
            channels = ngf * 2**level
            up += [
                nn.ConvTranspose2d(
                    channels, channels // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                _norm(norm, channels // 2),
                nn.ReLU(True),
            ]
            offset = 3 * (DOWNSAMPLINGS - level)
            record(f"up.{offset}", 1)
            record(f"up.{offset + 1}", 2)
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh())
        record("", 1)
        record("head.1", 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The translated images."""
        return self.head(self.up(self.blocks(self.down(self.stem(images)))))
