"""The CycleGAN LightningModule (Zhu et al. 2017): two generators, two discriminators, cycles.

``generator_ab`` maps domain A to B and ``generator_ba`` back; ``discriminator_b`` tells real B
from generated B, ``discriminator_a`` the same for A. (The reference calls them G_A, G_B, D_A,
D_B: G_A = generator_ab, G_B = generator_ba, D_A = discriminator_b, D_B = discriminator_a.)

Each step: the generators' step on GAN loss (LSGAN by default) + cycle L1 (lambda_A,
lambda_B = 10) + identity L1 (lambda_identity * lambda = 0.5 * 10) with the discriminators
frozen, then both discriminators on real images and on fakes drawn from an image pool of 50,
their losses halved. Adam (2e-4, betas 0.5/0.999), lr constant for ``n_epochs`` then linearly
to zero over ``n_epochs_decay`` (set at the start of each epoch, as the reference's ``train.py``
does). The GAN loss, the schedule, the networks' init and the grid
layout are pix2pix's; validation logs A -> B -> A and B -> A -> B grids (TensorBoard and PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from src.common import tags
from src.common.errors import UserError
from src.common.visual import log_image_grid
from src.cyclegan.networks import build_discriminator, build_generator
from src.cyclegan.pool import ImagePool
from src.pix2pix.model import (
    GAN_MODES,
    gan_loss,
    linear_decay,
    named_schedulers,
    set_epoch_lr_before_monitor,
    step_schedulers_for_epoch,
    triplet_rows,
)
from src.pix2pix.networks import init_weights

GRID_TAGS = {"A": tags.samples("A_to_B_to_A"), "B": tags.samples("B_to_A_to_B")}
POOLS_KEY = "cyclegan_image_pools"


class CycleGANModule(L.LightningModule):
    """CycleGAN training on unaligned ``{"A": ..., "B": ...}`` batches."""

    def __init__(
        self,
        generator: dict[str, Any],
        discriminator: dict[str, Any],
        *,
        gan_mode: str = "lsgan",
        lambda_A: float = 10.0,
        lambda_B: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        init_type: str = "normal",
        init_gain: float = 0.02,
        grid_samples: int = 4,
        grid_dir: str | None = None,
    ) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise UserError(f"gan_mode: unknown '{gan_mode}'; use one of {', '.join(GAN_MODES)}")
        if lambda_identity > 0 and generator.get("input_nc", 3) != generator.get("output_nc", 3):
            raise UserError(
                "lambda_identity: the identity loss needs input_nc == output_nc; set it to 0"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator_ab = init_weights(build_generator(generator), init_type, init_gain)
        self.generator_ba = init_weights(build_generator(generator), init_type, init_gain)
        self.discriminator_a = init_weights(
            build_discriminator(**discriminator), init_type, init_gain
        )
        self.discriminator_b = init_weights(
            build_discriminator(**discriminator), init_type, init_gain
        )
        self.pool_a = ImagePool(pool_size)
        self.pool_b = ImagePool(pool_size)
        self.last_grids: dict[str, Path] = {}
        self._grid_rows: dict[str, list[torch.Tensor]] = {"A": [], "B": []}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """A -> B translation of ``images`` (N x 3 x H x W in [-1, 1])."""
        return self.generator_ab(images)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        betas = tuple(hp.betas)
        generators = [*self.generator_ab.parameters(), *self.generator_ba.parameters()]
        discriminators = [
            *self.discriminator_a.parameters(),
            *self.discriminator_b.parameters(),
        ]
        opt_g = torch.optim.Adam(generators, lr=hp.lr, betas=betas)
        opt_d = torch.optim.Adam(discriminators, lr=hp.lr, betas=betas)
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], named_schedulers(schedulers, (tags.LR_G, tags.LR_D))

    def _set_discriminators_trainable(self, trainable: bool) -> None:
        self.discriminator_a.requires_grad_(trainable)
        self.discriminator_b.requires_grad_(trainable)

    def generator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The generators' losses by name, and the fakes (B from A, A from B) they made."""
        hp = self.hparams
        fake_b = self.generator_ab(real_a)
        fake_a = self.generator_ba(real_b)
        losses = {
            "gan_ab": gan_loss(self.discriminator_b(fake_b), True, hp.gan_mode, for_d=False),
            "gan_ba": gan_loss(self.discriminator_a(fake_a), True, hp.gan_mode, for_d=False),
            "cycle_a": F.l1_loss(self.generator_ba(fake_b), real_a) * hp.lambda_A,
            "cycle_b": F.l1_loss(self.generator_ab(fake_a), real_b) * hp.lambda_B,
        }
        if hp.lambda_identity > 0:
            weight = hp.lambda_identity
            losses["idt_ab"] = F.l1_loss(self.generator_ab(real_b), real_b) * hp.lambda_B * weight
            losses["idt_ba"] = F.l1_loss(self.generator_ba(real_a), real_a) * hp.lambda_A * weight
        return losses, fake_b, fake_a

    def discriminator_loss(
        self, discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """Half the sum of ``discriminator``'s losses on real images and on (detached) fakes."""
        mode = self.hparams.gan_mode
        loss_real = gan_loss(discriminator(real), True, mode, for_d=True)
        loss_fake = gan_loss(discriminator(fake.detach()), False, mode, for_d=True)
        return 0.5 * (loss_real + loss_fake)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = batch["A"], batch["B"]

        self._set_discriminators_trainable(False)
        losses, fake_b, fake_a = self.generator_losses(real_a, real_b)
        loss_g = torch.stack(list(losses.values())).sum()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        self._set_discriminators_trainable(True)
        loss_d_b = self.discriminator_loss(self.discriminator_b, real_b, self.pool_b.query(fake_b))
        loss_d_a = self.discriminator_loss(self.discriminator_a, real_a, self.pool_a.query(fake_a))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d_a + loss_d_b)
        opt_d.step()

        logged = {tags.loss_g(name): value.detach() for name, value in losses.items()}
        logged |= {
            tags.LOSS_G: loss_g.detach(),
            tags.LOSS_D: (loss_d_a + loss_d_b).detach(),
            tags.loss_d("a"): loss_d_a.detach(),
            tags.loss_d("b"): loss_d_b.detach(),
        }
        self.log_dict(logged, batch_size=real_a.shape[0])
        self.log_dict(
            {"g": loss_g.detach(), "d": loss_d_a + loss_d_b},
            prog_bar=True,
            logger=False,
            batch_size=real_a.shape[0],
        )

    def on_train_start(self) -> None:
        """The first (or resumed) epoch's lr, set before its first step (the reference's order)."""
        step_schedulers_for_epoch(self)

    def on_train_epoch_end(self) -> None:
        set_epoch_lr_before_monitor(self)

    def cycles(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both round trips: ``fake_b, rec_a`` from A and ``fake_a, rec_b`` from B."""
        fake_b = self.generator_ab(real_a)
        fake_a = self.generator_ba(real_b)
        return {
            "fake_b": fake_b,
            "rec_a": self.generator_ba(fake_b),
            "fake_a": fake_a,
            "rec_b": self.generator_ab(fake_a),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        real_a, real_b = batch["A"], batch["B"]
        out = self.cycles(real_a, real_b)
        size = real_a.shape[0]
        self.log(tags.val("cycle_a_l1"), F.l1_loss(out["rec_a"], real_a), batch_size=size)
        self.log(tags.val("cycle_b_l1"), F.l1_loss(out["rec_b"], real_b), batch_size=size)
        wanted = self.hparams.grid_samples - sum(len(r) for r in self._grid_rows["A"]) // 3
        if wanted > 0 and not self.trainer.sanity_checking:
            self._grid_rows["A"].append(
                triplet_rows(real_a[:wanted], out["fake_b"][:wanted], out["rec_a"][:wanted])
            )
            self._grid_rows["B"].append(
                triplet_rows(real_b[:wanted], out["fake_a"][:wanted], out["rec_b"][:wanted])
            )

    def on_validation_epoch_end(self) -> None:
        """Log the A -> B -> A and B -> A -> B grids, one image's round trip a row."""
        for side, rows in self._grid_rows.items():
            if rows:
                path = log_image_grid(
                    self.logger,
                    GRID_TAGS[side],
                    torch.cat(rows),
                    self.global_step,
                    self.hparams.grid_dir,
                    nrow=3,
                )
                if path is not None:
                    self.last_grids[side] = path
        self._grid_rows = {"A": [], "B": []}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the image pools, so a resumed run continues with the same history of fakes."""
        checkpoint[POOLS_KEY] = {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pools = checkpoint.get(POOLS_KEY)
        if pools:
            self.pool_a.load_state_dict(pools["a"])
            self.pool_b.load_state_dict(pools["b"])
