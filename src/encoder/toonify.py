"""Toonify by inversion: encode the aligned photo with the real-face generator's encoder, render
its latents with the base generator blended towards the cartoon blend by ``degree``.

:class:`InversionRunner` is a serving runner (the ``Runner`` interface of
``src.serve.engine``): float crops in [-1, 1] at the generator's resolution in, cartoons of the
same shape out, so ``cartoonize backend=inversion``, the bot and the benchmark share the
engine's detection, alignment and paste-back.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from src.common.errors import UserError
from src.encoder.checkpoints import load_encoder
from src.encoder.inversion import (
    DEFAULT_STEPS,
    DegreeBlend,
    Inverter,
    checked_degree,
    render,
    resize_to,
)
from src.stylegan3.legacy import load_networks

FAMILY = "inversion"
NETWORKS = ("G", "G_ema")


def load_stylegan(path: str | os.PathLike[str], network: str, key: str) -> torch.nn.Module:
    """``network`` of our StyleGAN checkpoint or an official pickle, named by config ``key``."""
    if not path:
        raise UserError(f"{key} is not set; point it at a StyleGAN checkpoint or NVIDIA pickle")
    if network not in NETWORKS:
        raise UserError(f"inversion.network={network!r}; use G_ema or G")
    return load_networks(path)[network].eval()


class InversionRunner:
    """Encoder -> latents -> the base generator blended to ``degree`` (see module docstring)."""

    value_range = (-1.0, 1.0)
    family = FAMILY

    def __init__(
        self,
        inverter: Inverter,
        blend: DegreeBlend,
        degree: float = 1.0,
        steps: int | None = None,
    ) -> None:
        base = blend.base
        if (base.num_ws, base.w_dim) != (inverter.generator.num_ws, inverter.generator.w_dim):
            raise UserError("inversion: the encoder's generator and the blend's base differ")
        self.inverter = inverter.eval()
        self.blend = blend
        self.degree = checked_degree(degree)
        self.steps = steps
        self.image_size = int(base.img_resolution)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The photos' W+ latents (ReStyle: ``steps`` refinements)."""
        with torch.inference_mode():
            return self.inverter(images, self.steps)

    def render(self, ws: torch.Tensor, degree: float | None = None) -> torch.Tensor:
        """``ws`` through the generator of ``degree`` (the runner's own by default)."""
        generator = self.blend.at(self.degree if degree is None else degree)
        with torch.inference_mode():
            return render(generator, ws).float()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Cartoons (float32, N x 3 x S x S in [-1, 1]) of aligned crops in the same form."""
        images = torch.from_numpy(np.ascontiguousarray(batch))
        return self.render(self.latents(images)).clamp(-1, 1).numpy()


def load_inversion_runner(settings: Any, degree: float | None = None) -> InversionRunner:
    """The runner ``cartoonize.inversion`` describes: ``encoder`` (ours or an official
    e4e/ReStyle checkpoint), ``base`` (the generator it inverts), ``blended`` (the blend)."""
    network = str(settings.get("network", "G_ema"))
    if not settings.get("encoder"):
        raise UserError(
            "inversion.encoder is not set; point it at encoder.pt or an e4e/ReStyle .pt"
        )
    bundle = load_encoder(settings.encoder, settings.get("kind"))
    base = load_stylegan(settings.get("base"), network, "inversion.base")
    blended = load_stylegan(settings.get("blended"), network, "inversion.blended")
    steps = int(settings.get("restyle_steps") or DEFAULT_STEPS)
    inverter = Inverter(bundle, base, steps=steps)
    chosen = settings.get("degree", 1.0) if degree is None else degree
    return InversionRunner(inverter, DegreeBlend(base, blended), degree=chosen)


class InversionGenerator(torch.nn.Module):
    """A runner as an image-to-image module ([-1, 1] crops -> cartoons at its degree), for the
    pair scorers (``src.pix2pix.evaluate``)."""

    def __init__(self, runner: InversionRunner) -> None:
        super().__init__()
        self.runner = runner
        self.inverter = runner.inverter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Cartoons of ``images`` (resized to the generator's resolution first)."""
        crops = resize_to(images, self.runner.image_size)
        return self.runner.render(self.runner.latents(crops)).clamp(-1, 1)


def score_on_ground_truth(
    runner: InversionRunner,
    root: str,
    max_pairs: int,
    degrees: list[float],
    grid_path: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, float]]:
    """L1 / PSNR / SSIM of the inversion's cartoons against true photo -> cartoon pairs
    (``root/A``, ``root/B``) at every degree; the grid is drawn at the last degree."""
    from src.pix2pix.evaluate import evaluate_pairs, good_pairs

    pairs = good_pairs(root, max_pairs)
    scores = {}
    for index, degree in enumerate(degrees):
        runner.degree = checked_degree(degree)
        last = index == len(degrees) - 1
        scores[f"{degree:g}"] = evaluate_pairs(
            InversionGenerator(runner),
            pairs,
            runner.image_size,
            grid_path=grid_path if last else None,
        )
    return scores
