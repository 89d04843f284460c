"""The StyleGAN3 objective: non-saturating logistic losses, lazy R1, D-input blur, EMA.

Everything here is a plain function of tensors and modules, so the tests can compare each
piece with a direct computation and the LightningModule stays a schedule of these calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.stylegan3.ops import filter2d


def gamma_for_resolution(resolution: int) -> float:
    """The R1 weight preset: 0.5 at 128 px, 2 at 256, 8 at 512, 32 at 1024 (quadratic in size)."""
    return 0.5 * (resolution / 128) ** 2


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Per-sample non-saturating G loss ``softplus(-D(G(z)))``."""
    return F.softplus(-fake_logits)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Per-sample logistic D loss ``softplus(D(fake)) + softplus(-D(real))``."""
    return F.softplus(fake_logits) + F.softplus(-real_logits)


def r1_penalty(real_images: Tensor, real_logits: Tensor) -> Tensor:
    """Per-sample ``|grad_x D(x)|^2`` at the real images (``real_images`` must require grad and
    ``real_logits`` be computed from them); the graph is kept so the penalty can be trained."""
    (grads,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


def lazy_regularization(lr: float, betas: tuple[float, float], interval: int) -> dict:
    """Adam settings for a network regularised every ``interval`` steps: the extra step is folded
    in by scaling lr and the betas with ``interval / (interval + 1)``, as in StyleGAN2."""
    ratio = interval / (interval + 1)
    return {"lr": lr * ratio, "betas": (betas[0] ** ratio, betas[1] ** ratio)}


def blur_sigma(cur_nimg: int, init_sigma: float, fade_kimg: float) -> float:
    """Sigma of the blur applied to every image D sees: ``init_sigma`` fading to 0 linearly over
    the first ``fade_kimg`` thousand images (config R's early-training stabiliser)."""
    if fade_kimg <= 0 or init_sigma <= 0:
        return 0.0
    return max(1 - cur_nimg / (fade_kimg * 1e3), 0.0) * init_sigma


def blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of NCHW ``images`` with a separable ``3 * sigma`` radius filter."""
    if sigma <= 0:
        return images
    radius = math.floor(sigma * 3)
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = taps.div(sigma).square().neg().exp2()
    return filter2d(images, kernel / kernel.sum())


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """Per-step decay of G_ema: a half-life of ``ema_kimg`` thousand images, shortened to
    ``cur_nimg * rampup`` early in training when ``rampup`` is set."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = lerp(model, ema, beta)`` for parameters; buffers are copied, not averaged."""
    for (name, p_ema), (_, p) in zip(ema.named_parameters(), model.named_parameters(), strict=True):
        if p_ema.shape != p.shape:
            raise ValueError(f"G_ema and G differ at {name}")
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def sanitize_gradients(params: list[nn.Parameter]) -> None:
    """Replace NaN/inf gradients (fp16 overflow) by finite values, as the reference does."""
    for param in params:
        if param.grad is not None:
            torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)


def mix_styles(ws: Tensor, other_ws: Tensor, probability: float) -> Tensor:
    """Style mixing regularisation: with ``probability``, the ws from a random cutoff in
    [1, num_ws) on are taken from ``other_ws`` (another latent's), so that neighbouring layers
    learn not to depend on each other; one cutoff per batch, as in the reference."""
    if probability <= 0:
        return ws
    num_ws = ws.shape[1]
    cutoff = int(torch.randint(1, num_ws, [], device=ws.device))
    if float(torch.rand([], device=ws.device)) >= probability:
        return ws
    return torch.cat([ws[:, :cutoff], other_ws[:, cutoff:]], dim=1)


def path_length_penalty(
    images: Tensor, ws: Tensor, pl_mean: Tensor, decay: float
) -> tuple[Tensor, Tensor]:
    """StyleGAN2's path length regulariser: per-sample ``(|J_w^T y| - a)^2``, where ``y`` is
    image-space noise scaled by ``1/sqrt(H*W)``, ``J_w`` the Jacobian of the images with respect
    to ``ws`` and ``a`` the running mean of those lengths (``pl_mean`` moved by ``decay``).

    ``ws`` must be the input the images were synthesised from; the graph is kept so that the
    penalty can be trained. Returns the penalty and the updated (detached) running mean.
    """
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
    mean = pl_mean.lerp(lengths.mean(), decay)
    return (lengths - mean).square(), mean.detach()
