"""Projection of an image into a StyleGAN generator: find ws whose render matches it.

The optimisation follows NVIDIA's StyleGAN2-ADA ``projector.py``: start from ``w_avg`` (the mean
w of ``w_avg_samples`` mapped z drawn from ``RandomState(123)``), or from given latents (an
encoder's); Adam on w (one vector for every layer, space ``w``) or on one w per layer (``w+``);
the learning rate ramps up over the first ``lr_rampup_length`` of the steps and down along a
cosine over the last ``lr_rampdown_length``; Gaussian noise of ``initial_noise_factor * w_std``
is added to w and decays quadratically to zero at ``noise_ramp_length`` of the steps. StyleGAN2's
per-layer noise inputs (the ``noise_const`` buffers) start random, are optimised with w and are
renormalised after every step; their regulariser penalises the autocorrelation of each buffer
with itself shifted by one pixel, over a pyramid of 2x average-pooled copies down to 8 px.
StyleGAN3 has no noise inputs, so that term is skipped. With ``optimize_noise`` off the noise
inputs keep the generator's stored values (a start from an encoder trained with them).

The loss is ``lpips_weight * LPIPS + rec_weight * MSE + regularize_noise_weight * noise_reg +
identity_weight * (1 - cos(ID(G(w)), ID(B)))``, images compared at most ``loss_size`` px
(area-downsampled, as NVIDIA feeds its VGG16 256-px images).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import UserError
from src.stylegan3.networks import family_of, noise_kwargs

SPACES = ("w", "w+")
W_AVG_SEED = 123


@dataclass
class ProjectionSettings:
    """The optimiser's knobs; the defaults are NVIDIA's projector's."""

    num_steps: int = 1000
    space: str = "w"
    initial_learning_rate: float = 0.1
    lr_rampup_length: float = 0.05
    lr_rampdown_length: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    lpips_weight: float = 1.0
    rec_weight: float = 0.0
    identity_weight: float = 0.0
    loss_size: int = 256
    # Seeds the random start of the noise buffers and the latent noise of each step.
    seed: int = 0
    # Keep the render of every this many steps (and the last) for the progress video; 0: none.
    frame_every: int = 0
    # StyleGAN2's noise inputs: random start, optimised and regularised (NVIDIA's); False keeps
    # the generator's stored ones as they are.
    optimize_noise: bool = True

    def check(self) -> None:
        """One-line errors for settings that cannot run."""
        if self.space not in SPACES:
            raise UserError(f"space: {self.space!r}; use one of {', '.join(SPACES)}")
        if self.num_steps < 1:
            raise UserError(f"num_steps is {self.num_steps}; set it to 1 or more")
        for name in ("lr_rampup_length", "lr_rampdown_length", "noise_ramp_length"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"{name} is {getattr(self, name)}; it is a share in (0, 1]")


@dataclass
class LatentStats:
    """``w_avg`` [w_dim] and ``w_std`` (the RMS distance of mapped w from it)."""

    w_avg: Tensor
    w_std: float


@dataclass
class ProjectionResult:
    """What a projection found: final ``ws`` [num_ws, w_dim] (no latent noise), its render
    [3, H, W] in [-1, 1], the start's ws and render, the optimised noise buffers (StyleGAN2),
    the loss terms of each step and the frames kept for the progress video."""

    ws: Tensor
    image: Tensor
    start_ws: Tensor
    start_image: Tensor
    noise: dict[str, Tensor]
    history: list[dict[str, float]]
    frames: list[Tensor] = field(default_factory=list)


StepCallback = Callable[[int, dict[str, float]], None]


def latent_stats(generator: nn.Module, samples: int = 10_000, batch: int = 1_000) -> LatentStats:
    """w statistics of ``samples`` z from ``RandomState(123)`` (NVIDIA's projector's draw)."""
    z = torch.from_numpy(np.random.RandomState(W_AVG_SEED).randn(samples, generator.z_dim))
    device = next(generator.parameters()).device
    with torch.no_grad():
        w = torch.cat(
            [
                generator.mapping(chunk.to(device=device, dtype=torch.float32), None)[:, 0]
                for chunk in z.split(batch)
            ]
        )
    w_avg = w.mean(dim=0)
    w_std = float(((w - w_avg).square().sum() / samples).sqrt())
    return LatentStats(w_avg, w_std)


def noise_buffers(generator: nn.Module) -> dict[str, Tensor]:
    """StyleGAN2's per-layer noise inputs by name (``noise_const``); none for StyleGAN3."""
    return {name: buf for name, buf in generator.synthesis.named_buffers() if "noise_const" in name}


def noise_regularization(buffers: dict[str, Tensor]) -> Tensor:
    """Sum over buffers and pyramid levels (down to 8 px) of the squared mean products of each
    map with itself shifted by one pixel, across and down: zero for white noise."""
    total = torch.zeros([], device=next(iter(buffers.values())).device)
    for buffer in buffers.values():
        noise = buffer[None, None]
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean().square()
            total = total + (noise * noise.roll(1, dims=2)).mean().square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def learning_rate(step: int, settings: ProjectionSettings) -> float:
    """NVIDIA's schedule: linear ramp-up, flat, cosine ramp-down."""
    t = step / settings.num_steps
    ramp = min(1.0, (1.0 - t) / settings.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / settings.lr_rampup_length)
    return settings.initial_learning_rate * ramp


def latent_noise_scale(step: int, settings: ProjectionSettings, w_std: float) -> float:
    """The std of the noise added to w at ``step``: quadratic decay to 0 at the ramp's end."""
    t = step / settings.num_steps
    decay = max(0.0, 1.0 - t / settings.noise_ramp_length) ** 2
    return w_std * settings.initial_noise_factor * decay


def for_loss(images: Tensor, size: int) -> Tensor:
    """``images`` area-downsampled to ``size`` px when larger (NVIDIA's VGG16 input)."""
    if images.shape[-1] <= size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


@contextmanager
def noise_applied(generator: nn.Module, noise: dict[str, Tensor] | None) -> Iterator[None]:
    """Within the block, ``generator``'s noise buffers hold ``noise`` (restored after)."""
    buffers = noise_buffers(generator)
    saved = {name: buf.clone() for name, buf in buffers.items()}
    try:
        with torch.no_grad():
            for name, value in (noise or {}).items():
                if name in buffers:
                    buffers[name].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for name, buf in buffers.items():
                buf.copy_(saved[name])


def render(generator: nn.Module, ws: Tensor, noise: dict[str, Tensor] | None = None) -> Tensor:
    """Images [N, 3, H, W] of ws [N, num_ws, w_dim] with the stored (or given) noise."""
    device = next(generator.parameters()).device
    with torch.no_grad(), noise_applied(generator, noise):
        return generator.synthesis(ws.to(device), **noise_kwargs(generator, "const")).float()


def check_ws(ws: Tensor, generator: nn.Module, source: str) -> Tensor:
    """``ws`` as [num_ws, w_dim] for ``generator``, or one line saying what does not fit."""
    expected = (generator.num_ws, generator.w_dim)
    if ws.ndim == 1 and ws.shape[0] == generator.w_dim:
        return ws[None].expand(*expected).clone()
    if tuple(ws.shape) != expected:
        raise UserError(
            f"{source}: latents of shape {tuple(ws.shape)} do not fit this generator, which "
            f"takes ws of {list(expected)} ({family_of(generator)}); project with it again"
        )
    return ws


def project(
    generator: nn.Module,
    target: Tensor,
    settings: ProjectionSettings,
    *,
    stats: LatentStats,
    perceptual: nn.Module | None = None,
    identity: nn.Module | None = None,
    identity_reference: Tensor | None = None,
    start: Tensor | None = None,
    on_step: StepCallback | None = None,
) -> ProjectionResult:
    """Project ``target`` [3, H, W] in [-1, 1] (the generator's resolution) into ``generator``.

    ``perceptual`` is the LPIPS distance (needed when ``lpips_weight`` > 0); ``identity`` an
    :class:`~src.common.faceid.IdentityEncoder` with ``identity_reference`` the unit embedding
    [D] of the face to pull towards (needed when ``identity_weight`` > 0). ``start`` is
    [num_ws, w_dim] (W+) or [w_dim] latents to begin from instead of ``w_avg``; in space ``w``
    its mean over the layers. ``on_step(step, losses)`` runs after every step. The generator
    itself is not changed (a copy is optimised).
    """
    settings.check()
    if settings.lpips_weight > 0 and perceptual is None:
        raise UserError("lpips_weight > 0 needs the LPIPS network (lpips.vgg16)")
    if settings.identity_weight > 0 and (identity is None or identity_reference is None):
        raise UserError("identity_weight > 0 needs the identity network and a reference face")
    resolution = generator.img_resolution
    if tuple(target.shape) != (generator.img_channels, resolution, resolution):
        raise UserError(
            f"target of shape {tuple(target.shape)}; this generator draws "
            f"{generator.img_channels} x {resolution} x {resolution} images"
        )
    net = copy.deepcopy(generator).eval().requires_grad_(False)
    device = next(net.parameters()).device
    rng = torch.Generator(device="cpu").manual_seed(settings.seed)
    num_ws = net.num_ws

    start_ws = (
        stats.w_avg[None].expand(num_ws, -1).clone()
        if start is None
        else check_ws(start.float(), net, "start latents")
    ).to(device)
    initial = start_ws.mean(0, keepdim=True) if settings.space == "w" else start_ws
    latent = initial[None].clone().requires_grad_(True)
    start_image = render(net, start_ws[None])[0]
    buffers = noise_buffers(net) if settings.optimize_noise else {}
    with torch.no_grad():
        for buf in buffers.values():
            buf.copy_(torch.randn(buf.shape, generator=rng))
            buf.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [latent, *buffers.values()], betas=(0.9, 0.999), lr=settings.initial_learning_rate
    )
    target_small = for_loss(target[None].to(device).float(), settings.loss_size)
    synth_kwargs = noise_kwargs(net, "const")

    history: list[dict[str, float]] = []
    frames: list[Tensor] = []
    for step in range(settings.num_steps):
        lr = learning_rate(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        scale = latent_noise_scale(step, settings, stats.w_std)
        w_noise = torch.randn(latent.shape, generator=rng).to(device) * scale
        ws = (latent + w_noise).expand(1, num_ws, -1)
        synth = net.synthesis(ws, **synth_kwargs).float()
        synth_small = for_loss(synth, settings.loss_size)

        terms: dict[str, Tensor] = {}
        if settings.lpips_weight > 0:
            terms["lpips"] = perceptual(synth_small, target_small).mean()
        if settings.rec_weight > 0:
            terms["rec"] = F.mse_loss(synth_small, target_small)
        if buffers and settings.regularize_noise_weight > 0:
            terms["noise_reg"] = noise_regularization(buffers)
        if settings.identity_weight > 0:
            terms["identity"] = identity.distance(synth_small, identity_reference[None]).mean()
        weights = {
            "lpips": settings.lpips_weight,
            "rec": settings.rec_weight,
            "noise_reg": settings.regularize_noise_weight,
            "identity": settings.identity_weight,
        }
        loss = sum(
            (weights[name] * value for name, value in terms.items()),
            torch.zeros([], device=device),
        )
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for buf in buffers.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()

        record = {name: float(value.detach()) for name, value in terms.items()}
        record.update(loss=float(loss.detach()), lr=lr)
        history.append(record)
        if settings.frame_every and (
            step % settings.frame_every == 0 or step == settings.num_steps - 1
        ):
            frames.append(synth[0].detach().clamp(-1, 1).cpu())
        if on_step is not None:
            on_step(step, record)

    final_ws = latent.detach().expand(1, num_ws, -1)[0].clone()
    noise = {name: buf.detach().clone() for name, buf in buffers.items()}
    return ProjectionResult(
        ws=final_ws.cpu(),
        image=render(net, final_ws[None])[0].cpu(),
        start_ws=start_ws.cpu(),
        start_image=start_image.cpu(),
        noise={name: value.cpu() for name, value in noise.items()},
        history=history,
        frames=frames,
    )
