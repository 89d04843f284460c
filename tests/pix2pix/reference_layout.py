"""The pix2pix release's nested U-Net layout, rebuilt from its description for the tests.

Each block holds ``model`` (a Sequential): outermost [down conv, inner, ReLU, up conv, Tanh],
middle [LeakyReLU, down conv, norm, inner, ReLU, up conv, norm, (dropout)], innermost
[LeakyReLU, down conv, ReLU, up conv, norm]; non-outermost blocks return cat(x, model(x)).
Convs have a bias only with instance norm (the reference's ``use_bias``), save the outermost
up conv, which always has one. Written independently of ``src.pix2pix`` so the key mapping is
checked against a second, differently structured implementation rather than against itself.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(norm: str, channels: int) -> nn.Module:
    """The release's batch norm (affine, running stats) or instance norm (neither)."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels)


class NestedBlock(nn.Module):
    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        inner: nn.Module | None = None,
        *,
        outermost: bool = False,
        innermost: bool = False,
        dropout: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        bias = norm == "instance"
        down = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
            layers = [down, inner, nn.ReLU(), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, _norm(norm, outer_nc)]
        else:
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, _norm(norm, inner_nc), inner, nn.ReLU(), up]
            layers.append(_norm(norm, outer_nc))
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class NestedUnet(nn.Module):
    """The release's UnetGenerator; batch norm is its pix2pix default, instance its CycleGAN one."""

    def __init__(
        self,
        num_downs: int,
        ngf: int = 64,
        input_nc: int = 3,
        output_nc: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        block = NestedBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = NestedBlock(ngf * 8, ngf * 8, inner=block, dropout=True, norm=norm)
        block = NestedBlock(ngf * 4, ngf * 8, inner=block, norm=norm)
        block = NestedBlock(ngf * 2, ngf * 4, inner=block, norm=norm)
        block = NestedBlock(ngf, ngf * 2, inner=block, norm=norm)
        self.model = NestedBlock(output_nc, ngf, input_nc, block, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
