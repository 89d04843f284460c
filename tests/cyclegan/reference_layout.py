"""The CycleGAN reference's ResNet generator layout, rebuilt from its description for the tests.

The reference keeps the whole generator in one flat ``model`` Sequential: ReflectionPad2d(3),
7x7 conv, norm, ReLU; two stride-2 3x3 convs (norm, ReLU each); the residual blocks, each
holding ``conv_block`` (pad, 3x3 conv, norm, ReLU, [dropout], pad, 3x3 conv, norm; with zero
padding the convs pad themselves and there are no pad layers); two stride-2 transposed convs
(norm, ReLU each); ReflectionPad2d(3), 7x7 conv (with bias), Tanh. Convs before a norm have a
bias only with instance norm. Written independently of ``src.cyclegan`` so loading a file saved
from it checks our reader against a second, differently structured implementation.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    return nn.Identity()


class ReferenceResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, padding: str, dropout: bool) -> None:
        super().__init__()
        bias = norm == "instance"
        layers: list[nn.Module] = []
        for second in (False, True):
            pad = 0
            if padding == "reflect":
                layers.append(nn.ReflectionPad2d(1))
            elif padding == "replicate":
                layers.append(nn.ReplicationPad2d(1))
            else:
                pad = 1
            layers += [nn.Conv2d(dim, dim, 3, padding=pad, bias=bias), _norm(norm, dim)]
            if not second:
                layers.append(nn.ReLU(True))
                if dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ReferenceResnetGenerator(nn.Module):
    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        padding: str = "reflect",
        dropout: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
    ) -> None:
        super().__init__()
        bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                _norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ReferenceResnetBlock(ngf * 4, norm, padding, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, 2, padding=1, output_padding=1, bias=bias
                ),
                _norm(norm, ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
