"""Toonify by inversion: encode the aligned photo with the real-face generator's encoder, render
its latents with the base generator blended towards the cartoon blend by ``degree``.

With ``project_steps`` > 0 the encoder's latents are refined first by that many steps of the
latent tools' projector (:func:`src.latent.projection.project`) on the real-face generator,
against the photo (MSE, plus LPIPS when its weights are configured), starting from the encoder's
W+ and keeping the generator's noise inputs as the encoder saw them.

:class:`InversionRunner` is a serving runner (the ``Runner`` interface of
``src.serve.engine``): float crops in [-1, 1] at the generator's resolution in, cartoons of the
same shape out, so ``cartoonize backend=inversion``, the bot and the benchmark share the
engine's detection, alignment and paste-back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

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
from src.latent.projection import LatentStats, ProjectionSettings, latent_stats, project
from src.stylegan3.legacy import load_networks

FAMILY = "inversion"
NETWORKS = ("G", "G_ema")
# The projector's settings after an encoder where ``inversion.projection`` leaves them out (as
# configs/cartoonize/default.yaml): per-layer latents, a tenth of NVIDIA's from-average learning
# rate, no latent noise, MSE only (LPIPS needs its weights file).
REFINE_DEFAULTS = {
    "space": "w+",
    "initial_learning_rate": 0.01,
    "initial_noise_factor": 0.0,
    "rec_weight": 1.0,
    "lpips_weight": 0.0,
}


def load_stylegan(path: str | os.PathLike[str], network: str, key: str) -> torch.nn.Module:
    """``network`` of our StyleGAN checkpoint or an official pickle, named by config ``key``."""
    if not path:
        raise UserError(f"{key} is not set; point it at a StyleGAN checkpoint or NVIDIA pickle")
    if network not in NETWORKS:
        raise UserError(f"inversion.network={network!r}; use G_ema or G")
    return load_networks(path)[network].eval()


class LatentRefiner:
    """A few projection steps per photo from the encoder's latents (see the module docstring)."""

    def __init__(
        self,
        settings: ProjectionSettings,
        stats: LatentStats,
        perceptual: torch.nn.Module | None = None,
    ) -> None:
        settings.check()
        self.settings = settings
        self.stats = stats
        self.perceptual = perceptual

    def __call__(
        self, generator: torch.nn.Module, photos: torch.Tensor, ws: torch.Tensor
    ) -> torch.Tensor:
        """Refined ``ws`` [N, num_ws, w_dim] of ``photos`` [N, 3, S, S] (S: the resolution);
        gradients flow even when the caller is in inference mode."""
        with torch.inference_mode(False), torch.enable_grad():
            refined = [
                project(
                    generator,
                    photo.float().clone(),
                    self.settings,
                    stats=self.stats,
                    perceptual=self.perceptual,
                    start=start.clone(),
                ).ws
                for photo, start in zip(photos, ws, strict=True)
            ]
        return torch.stack(refined).to(ws)


def load_refiner(
    settings: Mapping[str, Any], steps: int, generator: torch.nn.Module
) -> LatentRefiner | None:
    """The refiner of ``inversion.projection`` for ``steps`` projection steps (None for 0)."""
    if steps < 0:
        raise UserError(f"inversion.project_steps={steps}: use 0 (encoder only) or more steps")
    if steps == 0:
        return None
    from src.latent.io import settings_from
    from src.latent.perceptual import load_perceptual

    given = (
        OmegaConf.to_container(settings, resolve=True)
        if OmegaConf.is_config(settings)
        else settings
    )
    node = {**REFINE_DEFAULTS, **given}  # type: ignore[dict-item]
    chosen = settings_from(node, num_steps=steps, optimize_noise=False)
    lpips = node.get("lpips") or {}
    perceptual = None
    if chosen.lpips_weight > 0:
        perceptual = load_perceptual(
            str(lpips.get("backbone", "torchvision")),
            lpips.get("vgg16"),
            "inversion.projection.lpips.vgg16",
        )
    if chosen.initial_noise_factor > 0:
        stats = latent_stats(generator, int(node.get("w_avg_samples") or 10_000))
    else:  # no latent noise: the statistics go unused (the start is the encoder's)
        stats = LatentStats(generator.mapping.w_avg.detach().clone(), 0.0)
    return LatentRefiner(chosen, stats, perceptual)


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
        refiner: LatentRefiner | None = None,
    ) -> None:
        base = blend.base
        if (base.num_ws, base.w_dim) != (inverter.generator.num_ws, inverter.generator.w_dim):
            raise UserError("inversion: the encoder's generator and the blend's base differ")
        self.inverter = inverter.eval()
        self.blend = blend
        self.degree = checked_degree(degree)
        self.steps = steps
        self.refiner = refiner
        self.image_size = int(base.img_resolution)

    @property
    def project_steps(self) -> int:
        """Projection steps after the encoder (0: none)."""
        return 0 if self.refiner is None else self.refiner.settings.num_steps

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The photos' W+ latents (ReStyle: ``steps`` refinements; then the projection steps)."""
        with torch.inference_mode():
            ws = self.inverter(images, self.steps)
        if self.refiner is None:
            return ws
        return self.refiner(self.inverter.generator, images, ws)

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
    if bundle.official and not settings.get("base"):
        raise UserError(
            f"inversion.base is not set: {Path(bundle.source).name}'s own generator weights "
            "(decoder.*) are not used; point inversion.base at the NVIDIA pickle it was trained "
            "with (e4e_ffhq_encode.pt: stylegan2-ffhq-1024x1024.pkl; stylegan3-editing's "
            "restyle_*_ffhq.pt: stylegan3-t-ffhq-1024x1024.pkl)"
        )
    base = load_stylegan(settings.get("base"), network, "inversion.base")
    blended = load_stylegan(settings.get("blended"), network, "inversion.blended")
    steps = int(settings.get("restyle_steps") or DEFAULT_STEPS)
    inverter = Inverter(bundle, base, steps=steps)
    refiner = load_refiner(
        settings.get("projection") or {}, int(settings.get("project_steps") or 0), base
    )
    chosen = settings.get("degree", 1.0) if degree is None else degree
    return InversionRunner(inverter, DegreeBlend(base, blended), degree=chosen, refiner=refiner)


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
