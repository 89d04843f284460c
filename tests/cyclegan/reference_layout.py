"""The CycleGAN reference's ``ResnetGenerator``, rebuilt from its public description for tests.

pytorch-CycleGAN-and-pix2pix ``models/networks.py``: one flat ``model`` Sequential of reflect
pad 3, 7x7 conv, norm, ReLU; two (3x3 stride-2 conv, norm, ReLU); ``n_blocks`` ``ResnetBlock``
(each a ``conv_block`` Sequential: [pad], 3x3 conv, norm, ReLU, [dropout], [pad], 3x3 conv, norm;
``zero`` padding pads in the conv instead of a layer); two (3x3 stride-2 transposed conv with
output padding 1, norm, ReLU); reflect pad 3, 7x7 conv (with bias), Tanh. Convs before a norm
have a bias only with instance norm; ``none`` puts an ``Identity`` where the norm goes.
Independent of ``src.cyclegan``, so the key mapping is checked against a second implementation.
"""

from __future__ import annotations

import torch
from torch import nn


def reference_norm(norm: str, channels: int) -> nn.Module:
    """The reference's ``get_norm_layer(norm)(channels)``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


def _pad(padding: str) -> list[nn.Module]:
    if padding == "reflect":
        return [nn.ReflectionPad2d(1)]
    if padding == "replicate":
        return [nn.ReplicationPad2d(1)]
    return []


class FlatResnetBlock(nn.Module):
    def __init__(self, dim: int, padding: str, norm: str, dropout: bool, bias: bool) -> None:
        super().__init__()
        conv_padding = 1 if padding == "zero" else 0
        layers = _pad(padding)
        layers += [nn.Conv2d(dim, dim, 3, padding=conv_padding, bias=bias)]
        layers += [reference_norm(norm, dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += _pad(padding)
        layers += [nn.Conv2d(dim, dim, 3, padding=conv_padding, bias=bias)]
        layers.append(reference_norm(norm, dim))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class FlatResnetGenerator(nn.Module):
    """The reference ``ResnetGenerator(input_nc, output_nc, ngf, norm_layer, use_dropout,
    n_blocks, padding_type)``."""

    def __init__(
        self,
        ngf: int,
        n_blocks: int,
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
            reference_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                reference_norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [FlatResnetBlock(ngf * 4, padding, norm, dropout, bias) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, 2, padding=1, output_padding=1, bias=bias
                ),
                reference_norm(norm, ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
