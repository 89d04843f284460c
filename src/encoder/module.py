"""Training an e4e / ReStyle encoder against a frozen StyleGAN generator (Lightning).

Per step: encode a batch of aligned faces (ReStyle: ``iterations`` refinement passes, each
seeing the photo and the last reconstruction, with the previous latents detached as in ReStyle's
training), render with the frozen generator and minimise

``l2 * MSE + lpips * LPIPS + id * (1 - cos id) + delta_norm * sum_i ||w_i - w_0|| + w_disc * adv``

where ``adv`` fools e4e's latent discriminator (trained alongside with an R1 penalty on real,
mapped ws). e4e's progressive training: before ``progressive_start`` steps only the base w is
trained, then one more layer's offset every ``progressive_step_every`` steps (derived from the
global step, so an exact resume lands on the same stage). Validation logs reconstruction grids
(photo | reconstruction), PSNR, LPIPS and identity similarity on the held-out faces.

Exact resume: the batches come from an :class:`~src.stylegan3.dataset.InfiniteSampler` that
starts after the images this rank already consumed (``steps_done * batch_size``), and every
step's random draws (the discriminator's mapped ws) come from a generator seeded by
``(seed, step, rank)``, so a run resumed from Lightning's checkpoint (weights, both optimizers,
``steps_done``) continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional.image import peak_signal_noise_ratio

from src.common import tags
from src.encoder.checkpoints import EncoderBundle
from src.encoder.inversion import Inverter, render, resize_to
from src.encoder.losses import (
    LatentDiscriminator,
    delta_norm,
    discriminator_loss,
    identity_loss,
    identity_similarity,
    r1_penalty,
)
from src.encoder.networks import IRSEEncoder
from src.stylegan3.dataset import InfiniteSampler

LOSS_KEYS = ("l2", "lpips", "id", "delta_norm", "w_discriminator", "r1")


def progressive_stage(step: int, start: int | None, every: int, n_styles: int) -> int | None:
    """e4e's stage at ``step``: None (all layers) without progressive training, else 0 before
    ``start`` and one more offset every ``every`` steps after it."""
    if start is None:
        return None
    if step < start:
        return 0
    stage = 1 + (step - start) // max(1, every)
    return None if stage >= n_styles - 1 else stage


class EncoderTraining(L.LightningModule):
    """Encoder (trained), generator (frozen), latent discriminator (e4e kinds)."""

    def __init__(
        self,
        encoder: IRSEEncoder,
        generator: nn.Module,
        *,
        lr: float = 1e-4,
        d_lr: float = 2e-5,
        weights: dict[str, float] | None = None,
        iterations: int = 5,
        progressive_start: int | None = None,
        progressive_step_every: int = 2000,
        lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
        identity: nn.Module | None = None,
        train_set: Dataset | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.encoder = encoder
        self.generator = generator.eval().requires_grad_(False)
        self.register_buffer("latent_avg", generator.mapping.w_avg.detach().clone())
        self.weights = {k: 0.0 for k in LOSS_KEYS} | dict(weights or {})
        unknown = sorted(set(self.weights) - set(LOSS_KEYS))
        if unknown:
            raise ValueError(f"unknown loss weights {unknown}; known: {LOSS_KEYS}")
        self.lr, self.d_lr = float(lr), float(d_lr)
        self.iterations = int(iterations) if encoder.in_channels == 6 else 1
        self.progressive_start = progressive_start
        self.progressive_step_every = int(progressive_step_every)
        self.lpips = lpips
        self.identity = identity.eval().requires_grad_(False) if identity is not None else None
        self.use_discriminator = encoder.kind != "restyle_psp" and self.weights["w_discriminator"]
        self.discriminator = LatentDiscriminator(encoder.w_dim) if self.use_discriminator else None
        self.train_set = train_set
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        # Training steps done (saved: a resumed run continues the progressive schedule, the data
        # order and the random draws where it stopped).
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def train_dataloader(self) -> DataLoader:
        """Endless batches of ``batch_size`` faces a rank, continuing after ``steps_done``."""
        if self.train_set is None:
            raise ValueError("EncoderTraining was built without train_set")
        sampler = InfiniteSampler(
            len(self.train_set),  # type: ignore[arg-type]
            seed=self.seed,
            rank=self.global_rank,
            world=self.trainer.world_size,
            start=int(self.steps_done) * self.batch_size,
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            # Its own generator: making the iterator draws nothing from the global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def step_generator(self) -> torch.Generator:
        """This step's random stream: seeded by (seed, step, rank), so a resume draws the same."""
        step_seed = (self.seed * 1_000_003 + int(self.steps_done)) * 4096 + self.global_rank
        return torch.Generator().manual_seed(step_seed)

    def inverter(self) -> Inverter:
        """An :class:`Inverter` over the current encoder (shares its weights)."""
        bundle = EncoderBundle(self.encoder, self.latent_avg_ws(), {}, "training")
        return Inverter(bundle, self.generator, steps=self.iterations)

    def latent_avg_ws(self) -> Tensor:
        """The latent average as [n_styles, w_dim]."""
        return self.latent_avg.unsqueeze(0).expand(self.encoder.n_styles, -1).clone()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers = [torch.optim.Adam(self.encoder.parameters(), lr=self.lr)]
        if self.discriminator is not None:
            optimizers.append(torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr))
        return optimizers

    def reconstruction_loss(self, fake: Tensor, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted image losses of ``fake`` against ``real`` and their parts."""
        parts = {"l2": F.mse_loss(fake, real)}
        if self.lpips is not None and self.weights["lpips"]:
            parts["lpips"] = self.lpips(fake, real).mean()
        if self.identity is not None and self.weights["id"]:
            parts["id"] = identity_loss(self.identity, fake, real)
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts  # type: ignore[return-value]

    def _mapped_ws(self, count: int) -> Tensor:
        z = torch.randn(count, self.generator.z_dim, generator=self.step_generator())
        z = z.to(self.device)
        with torch.autocast(self.device.type, enabled=False):  # the generator's own precision
            return self.generator.mapping(z, None)[:, 0]

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        optimizers = self.optimizers()
        opt_e, opt_d = optimizers if isinstance(optimizers, list) else (optimizers, None)
        stage = progressive_stage(
            int(self.steps_done),
            self.progressive_start,
            self.progressive_step_every,
            self.encoder.n_styles,
        )
        self.encoder.progressive_stage = stage
        real = batch
        x = resize_to(real, self.encoder.input_size)
        latent = self.latent_avg_ws().unsqueeze(0).expand(len(x), -1, -1)
        previous = x
        if self.encoder.in_channels == 6:
            previous = resize_to(render(self.generator, latent[:1]), self.encoder.input_size)
            previous = previous.expand_as(x)
        total = real.new_zeros(())
        logs: dict[str, Tensor] = {}
        for _ in range(self.iterations):
            inputs = x if self.encoder.in_channels == 3 else torch.cat([x, previous], dim=1)
            ws = latent.detach() + self.encoder(inputs)
            fake = render(self.generator, ws)
            loss, logs = self.reconstruction_loss(fake, real)
            codes = ws - latent.detach()
            logs["delta_norm"] = delta_norm(codes, self.encoder.active_styles())
            loss = loss + self.weights["delta_norm"] * logs["delta_norm"]
            if self.discriminator is not None:
                logs["adv"] = F.softplus(-self.discriminator(ws[:, 0])).mean()
                loss = loss + self.weights["w_discriminator"] * logs["adv"]
            total = total + loss
            latent, previous = ws, resize_to(fake.detach(), self.encoder.input_size)
        opt_e.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_e.step()
        logged = {tags.loss(k): v.detach() for k, v in logs.items()}
        if self.discriminator is not None and opt_d is not None:
            real_w = self._mapped_ws(len(x)).detach().requires_grad_(True)
            real_logits = self.discriminator(real_w)
            d_loss = discriminator_loss(real_logits, self.discriminator(latent[:, 0].detach()))
            r1 = r1_penalty(real_w, real_logits)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss + self.weights["r1"] / 2 * r1)
            opt_d.step()
            logged |= {tags.LOSS_D: d_loss.detach(), tags.train("r1_penalty"): r1.detach()}
        self.log_dict(logged, prog_bar=False)
        self.log(tags.LOSS, total.detach(), prog_bar=True)
        self.log(tags.train("stage"), float(-1 if stage is None else stage))
        self.steps_done += 1

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstructions, the latent average's picture) for ``images``, in eval mode."""
        self.encoder.progressive_stage = None
        was_training = self.encoder.training
        self.encoder.eval()
        inverter = self.inverter()
        fake = render(self.generator, inverter(images))
        average = render(self.generator, self.latent_avg_ws().unsqueeze(0))
        self.encoder.train(was_training)
        return fake, average.expand_as(fake)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        fake, average = self.reconstruct(batch)
        figures = reconstruction_figures(fake, batch, self.lpips, self.identity)
        baseline = reconstruction_figures(average, batch, self.lpips, self.identity)
        self.log_dict(tags.evaluation(figures), batch_size=len(batch))
        self.log_dict(tags.evaluation(baseline, "avg_latent_"), batch_size=len(batch))
        if batch_idx == 0:
            from src.common.visual import log_image_grid

            pairs = torch.stack([batch[:8], fake[:8].clamp(-1, 1)], dim=1).flatten(0, 1)
            log_image_grid(
                self.logger,
                tags.samples("photo_reconstruction"),
                pairs,
                self.global_step,
                None,
                nrow=2,
            )


def reconstruction_figures(
    fake: Tensor,
    real: Tensor,
    lpips: Callable[[Tensor, Tensor], Tensor] | None,
    identity: nn.Module | None,
) -> dict[str, Tensor]:
    """L2, PSNR (and LPIPS, identity similarity when configured) of ``fake`` against ``real``."""
    fake = fake.clamp(-1, 1)
    figures = {
        "l2": F.mse_loss(fake, real),
        "psnr": peak_signal_noise_ratio(fake, real, data_range=(-1.0, 1.0)),
    }
    if lpips is not None:
        with torch.no_grad():
            figures["lpips"] = lpips(fake, real).mean()
    if identity is not None:
        figures["id_similarity"] = identity_similarity(identity, fake, real)
    return figures
