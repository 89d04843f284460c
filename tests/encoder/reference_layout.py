"""The official e4e / ReStyle encoder layouts, rebuilt from their public description for tests.

Written independently of ``src.encoder`` (another structure: block lists from a stage table,
the releases' in-place ``w[:, i] += delta`` and pyramid by body index), sized by arguments so
the tests can use tiny widths. ``write_release_checkpoint`` saves a checkpoint the way the
releases' coaches do: ``{"state_dict": net.state_dict(), "opts": vars(opts), "latent_avg"}``
where ``net`` holds ``encoder`` and ``decoder`` modules.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class Unit(nn.Module):
    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            Gate(depth, 16),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class ScaledLinear(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1 / math.sqrt(cin)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias * 1.0)


class StyleHead(nn.Module):
    def __init__(self, cin: int, cout: int, spatial: int) -> None:
        super().__init__()
        self.cout = cout
        layers = [nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            layers += [nn.Conv2d(cout, cout, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = ScaledLinear(cout, cout)

    def forward(self, x):
        return self.linear(self.convs(x).view(-1, self.cout))


def stage_table(widths, units):
    table = []
    previous = widths[0]
    for width, count in zip(widths, units, strict=True):
        table.append([(previous, width, 2)] + [(width, width, 1)] * (count - 1))
        previous = width
    return table


class ReferenceEncoder(nn.Module):
    """``e4e``: Encoder4Editing; ``restyle_e4e``: ProgressiveBackboneEncoder; ``restyle_psp``:
    BackboneEncoder (all with IR-SE units)."""

    def __init__(self, kind, n_styles, w_dim, size, in_nc, widths, units) -> None:
        super().__init__()
        self.kind = kind
        self.style_count = n_styles
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_nc, widths[0], (3, 3), 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.PReLU(widths[0]),
        )
        table = stage_table(widths, units)
        self.body = nn.Sequential(*[Unit(*spec) for stage in table for spec in stage])
        ends = []
        total = 0
        for stage in table:
            total += len(stage)
            ends.append(total - 1)
        self.c1_at, self.c2_at, self.c3_at = ends[1], ends[2], ends[3]
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            if kind == "e4e":
                spatial = size // 16 if i < 3 else (size // 8 if i < 7 else size // 4)
            else:
                spatial = size // 16
            self.styles.append(StyleHead(widths[3], w_dim, spatial))
        if kind == "e4e":
            self.latlayer1 = nn.Conv2d(widths[2], widths[3], kernel_size=1, stride=1, padding=0)
            self.latlayer2 = nn.Conv2d(widths[1], widths[3], kernel_size=1, stride=1, padding=0)

    @staticmethod
    def _upsample_add(x, y):
        _, _, h, w = y.size()
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True) + y

    def forward(self, x):
        x = self.input_layer(x)
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i == self.c1_at:
                c1 = x
            elif i == self.c2_at:
                c2 = x
            elif i == self.c3_at:
                c3 = x
        if self.kind == "restyle_psp":
            return torch.stack([style(c3) for style in self.styles], dim=1)
        w0 = self.styles[0](c3)
        w = w0.repeat(self.style_count, 1, 1).permute(1, 0, 2)
        features = c3
        for i in range(1, self.style_count):
            if self.kind == "e4e" and i == 3:
                p2 = self._upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif self.kind == "e4e" and i == 7:
                features = self._upsample_add(p2, self.latlayer2(c1))
            w[:, i] += self.styles[i](features)
        return w


class ReleaseNet(nn.Module):
    """The releases' pSp/e4e wrapper: ``encoder`` and a ``decoder`` (a stand-in here)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = nn.Module()
        self.decoder.synthesis = nn.Linear(4, 4)


ENCODER_TYPES = {
    "e4e": "Encoder4Editing",
    "restyle_e4e": "ProgressiveBackboneEncoder",
    "restyle_psp": "BackboneEncoder",
}


def randomized(encoder: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, BN statistics and PReLU slopes included, in eval mode."""
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=noise) * 0.3
            if name.endswith("running_var"):
                values = values.abs() + 0.5
            tensor.copy_(values)
    return encoder.eval()


def write_release_checkpoint(
    path: Path, encoder: nn.Module, kind: str, latent_avg: torch.Tensor, opts: dict | None = None
) -> Path:
    """Save ``encoder`` as the e4e / ReStyle releases save their trained networks."""
    net = ReleaseNet(encoder)
    options = {
        "encoder_type": ENCODER_TYPES[kind],
        "input_nc": encoder.input_layer[0].in_channels,
        "start_from_latent_avg": True,
        "lpips_lambda": 0.8,
        "checkpoint_path": None,
        **(opts or {}),
    }
    torch.save({"state_dict": net.state_dict(), "opts": options, "latent_avg": latent_avg}, path)
    return path
