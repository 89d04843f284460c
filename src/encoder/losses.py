"""The encoder's training losses (e4e / ReStyle): reconstruction, perceptual, identity, the
offsets' norm and the latent discriminator with R1.

LPIPS and the identity network are injected (e.g. the latent tools' ``src.latent.perceptual`` and
``src.common.faceid``): any callable ``lpips(a, b) -> [N] or scalar``
distance and any module ``identity(images) -> [N, D]`` embeddings, configured with Hydra
``_target_`` (``encoder.lpips`` / ``encoder.identity``). The shared face-identity module (ArcFace
IR-SE50 / MobileFaceNet) and the shared LPIPS plug in there without changes here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Callable[[Tensor, Tensor], Tensor]


class LatentDiscriminator(nn.Module):
    """e4e's latent-codes discriminator: an MLP on single w vectors (LeakyReLU 0.2), real ws
    from the mapping network, fake ones the encoder's base w."""

    def __init__(self, w_dim: int, layers: int = 4) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2)]
        blocks.append(nn.Linear(w_dim, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, w: Tensor) -> Tensor:
        """Logits [N] of ``w`` [N, w_dim] being a mapped latent."""
        return self.net(w).squeeze(1)


def delta_norm(ws: Tensor, active: int) -> Tensor:
    """e4e's delta regularisation: the L2 norm of each active layer's offset from w0, summed over
    layers and averaged over the batch (zero when only w0 is trained)."""
    if active <= 1:
        return ws.new_zeros(())
    deltas = ws[:, 1:active] - ws[:, :1]
    return deltas.norm(p=2, dim=2).mean(dim=0).sum()


def identity_loss(identity: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """1 - cosine similarity of the identity embeddings (the real face's held fixed)."""
    with torch.no_grad():
        target = F.normalize(identity(real), dim=1)
    return (1 - (F.normalize(identity(fake), dim=1) * target).sum(dim=1)).mean()


def identity_similarity(identity: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """Mean cosine similarity of the identity embeddings (a validation figure)."""
    with torch.no_grad():
        a = F.normalize(identity(fake), dim=1)
        b = F.normalize(identity(real), dim=1)
    return (a * b).sum(dim=1).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating logistic loss of the latent discriminator."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real: Tensor, logits: Tensor) -> Tensor:
    """Squared gradient norm of the logits at the real ws (``real`` must require grad)."""
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=1).mean()
