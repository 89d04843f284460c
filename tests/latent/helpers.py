"""Tiny generators of both families and targets they drew from known ws, for the latent tests."""

from __future__ import annotations

import torch
from torch import nn

from src.latent.projection import LatentStats, latent_stats, render
from src.stylegan3.legacy import GENERATORS
from tests.stylegan3.tiny import G_KWARGS, SG2_G_KWARGS

KWARGS = {"stylegan3": G_KWARGS, "stylegan2": SG2_G_KWARGS}


def tiny_generator(family: str, seed: int = 0) -> nn.Module:
    """A random-weight 16-px generator (StyleGAN3: 5 ws, StyleGAN2: 6 ws), frozen, in eval."""
    torch.manual_seed(seed)
    return GENERATORS[family](**KWARGS[family]).eval().requires_grad_(False)


def known_ws(generator: nn.Module, seed: int, count: int = 1) -> torch.Tensor:
    """[count, num_ws, w_dim] ws mapped from z drawn with ``seed``."""
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator.mapping(z, None)


def stats_of(generator: nn.Module) -> LatentStats:
    """w statistics from 1,000 samples (enough for a 16-d w)."""
    return latent_stats(generator, 1_000)


def drawn(generator: nn.Module, ws: torch.Tensor) -> torch.Tensor:
    """The generator's [3, H, W] render of ws [num_ws, w_dim] with its stored noise."""
    return render(generator, ws[None])[0]


def psnr(first: torch.Tensor, second: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    return float(10 * torch.log10(4 / (first - second).square().mean()))
