"""The pix2pix LightningModule: conditional GAN + L1, D then G every step, linear lr decay.

Follows the paper: the discriminator sees (A, B) pairs concatenated on channels; its loss is
halved; the generator minimises the GAN loss plus ``lambda_l1`` times the L1 distance to the
target. Adam (lr 2e-4, betas 0.5/0.999) for both, lr constant for ``n_epochs`` and then
linearly down to zero over ``n_epochs_decay``, set at the start of each epoch as the
reference's ``train.py`` does. Validation reports L1, PSNR and SSIM and logs
a grid input | output | target to TensorBoard and as a PNG.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from src.common import tags
from src.common.errors import UserError
from src.common.visual import log_image_grid
from src.pix2pix.networks import build_discriminator, build_generator, init_weights

GAN_MODES = ("vanilla", "lsgan", "hinge")


def gan_loss(logits: torch.Tensor, target_is_real: bool, mode: str, *, for_d: bool) -> torch.Tensor:
    """The GAN loss of discriminator ``logits`` against "real" or "fake".

    vanilla: BCE with logits; lsgan: squared error to 1 / 0; hinge: for D, mean relu(1 - x)
    on real and relu(1 + x) on fake, for G the mean of -x on its fakes.
    """
    if mode == "vanilla":
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, 1.0 if target_is_real else 0.0))
    if mode == "hinge":
        if not for_d:
            return -logits.mean()
        return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()
    raise UserError(f"gan_mode: unknown '{mode}'; use one of {', '.join(GAN_MODES)}")


def linear_decay(n_epochs: int, n_epochs_decay: int) -> Any:
    """The reference's ``linear`` lr rule (``networks.get_scheduler``, ``epoch_count`` 1).

    ``factor(k) = 1 - max(0, k + 1 - n_epochs) / (n_epochs_decay + 1)``, where ``k`` is how
    often the scheduler has stepped. The reference's ``train.py`` steps it at the start of
    every epoch, so 1-based epoch ``k`` trains at ``factor(k)``: 1 up to epoch
    ``n_epochs - 1``, then down by ``1 / (n_epochs_decay + 1)`` an epoch to 0 in the last one.
    """

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)

    return factor


def step_schedulers_for_epoch(module: L.LightningModule, epoch: int | None = None) -> None:
    """Set every lr scheduler of ``module`` to ``epoch`` (default: the current one), as the
    reference does.

    The reference calls ``update_learning_rate()`` at the start of each epoch, so 0-based epoch
    ``e`` runs with the scheduler stepped ``e + 1`` times. Setting the count rather than
    stepping once more keeps it right when Lightning restarts an epoch on resume.
    """
    with warnings.catch_warnings():
        # The first epoch's step comes before any optimizer step, by design.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for scheduler in module.lr_schedulers():
            scheduler.last_epoch = module.current_epoch if epoch is None else epoch
            scheduler.step()


def set_epoch_lr_before_monitor(module: L.LightningModule) -> None:
    """At an epoch's end, set the next epoch's lr (when there is one).

    Lightning runs callbacks' ``on_train_epoch_start`` before the module's, so the lr a
    ``LearningRateMonitor`` logs at an epoch's start must already be set by then.
    """
    following = module.current_epoch + 1
    max_epochs = module.trainer.max_epochs
    if max_epochs is None or max_epochs < 0 or following < max_epochs:
        step_schedulers_for_epoch(module, following)


def named_schedulers(schedulers: list[Any], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Scheduler configs with the scheme's tags (``train/lr_G``...) as LearningRateMonitor
    names, one an epoch (the stages step them themselves)."""
    return [
        {"scheduler": scheduler, "interval": "epoch", "name": name}
        for scheduler, name in zip(schedulers, names, strict=True)
    ]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to [0, 1], clamped (what PSNR and SSIM are measured on)."""
    return ((images + 1) / 2).clamp(0, 1)


class Pix2PixModule(L.LightningModule):
    """pix2pix training of a U-Net generator against a PatchGAN on aligned (A, B) batches.

    ``image_size`` (the training crop) is only recorded, so that an export from a Lightning
    checkpoint knows the size the generator was trained at.
    """

    def __init__(
        self,
        generator: dict[str, Any],
        discriminator: dict[str, Any],
        *,
        gan_mode: str = "vanilla",
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        init_type: str = "normal",
        init_gain: float = 0.02,
        grid_samples: int = 8,
        grid_dir: str | None = None,
        image_size: int = 256,
    ) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise UserError(f"gan_mode: unknown '{gan_mode}'; use one of {', '.join(GAN_MODES)}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = init_weights(build_generator(generator), init_type, init_gain)
        self.discriminator = init_weights(
            build_discriminator(**discriminator), init_type, init_gain
        )
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.last_grid: Path | None = None
        self._grid_rows: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The generator's translation of ``images`` (N x 3 x H x W in [-1, 1])."""
        return self.generator(images)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=betas)
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], named_schedulers(schedulers, (tags.LR_G, tags.LR_D))

    def discriminator_loss(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor
    ) -> torch.Tensor:
        """Half the sum of D's losses on the real pair and the (detached) fake pair."""
        mode = self.hparams.gan_mode
        pred_fake = self.discriminator(torch.cat([real_a, fake_b.detach()], 1))
        pred_real = self.discriminator(torch.cat([real_a, real_b], 1))
        loss_fake = gan_loss(pred_fake, False, mode, for_d=True)
        loss_real = gan_loss(pred_real, True, mode, for_d=True)
        return 0.5 * (loss_fake + loss_real)

    def generator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """G's GAN loss (fooling D on the fake pair) and its L1 distance to the target."""
        pred_fake = self.discriminator(torch.cat([real_a, fake_b], 1))
        loss_gan = gan_loss(pred_fake, True, self.hparams.gan_mode, for_d=False)
        return loss_gan, F.l1_loss(fake_b, real_b)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = batch["A"], batch["B"]
        fake_b = self.generator(real_a)

        self.discriminator.requires_grad_(True)
        loss_d = self.discriminator_loss(real_a, real_b, fake_b)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        self.discriminator.requires_grad_(False)
        loss_g_gan, loss_g_l1 = self.generator_losses(real_a, real_b, fake_b)
        loss_g = loss_g_gan + self.hparams.lambda_l1 * loss_g_l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.discriminator.requires_grad_(True)

        size = real_a.shape[0]
        self.log_dict(
            {
                tags.LOSS_G: loss_g.detach(),
                tags.LOSS_D: loss_d.detach(),
                tags.loss_g("gan"): loss_g_gan.detach(),
                tags.loss_g("l1"): loss_g_l1.detach(),
            },
            batch_size=size,
        )
        self.log_dict(
            {"loss_d": loss_d, "loss_g_gan": loss_g_gan, "loss_g_l1": loss_g_l1},
            prog_bar=True,
            logger=False,
            batch_size=size,
        )

    def on_train_start(self) -> None:
        """The first (or resumed) epoch's lr, set before its first step (the reference's order)."""
        step_schedulers_for_epoch(self)

    def on_train_epoch_end(self) -> None:
        set_epoch_lr_before_monitor(self)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        real_a, real_b = batch["A"], batch["B"]
        fake_b = self.generator(real_a)
        size = real_a.shape[0]
        self.log(tags.val("l1"), F.l1_loss(fake_b, real_b), prog_bar=True, batch_size=size)
        self.val_psnr(to_unit(fake_b), to_unit(real_b))
        self.val_ssim(to_unit(fake_b), to_unit(real_b))
        self.log(tags.metric("psnr"), self.val_psnr, batch_size=size)
        self.log(tags.metric("ssim"), self.val_ssim, batch_size=size)
        wanted = self.hparams.grid_samples - sum(len(rows) for rows in self._grid_rows) // 3
        if wanted > 0 and not self.trainer.sanity_checking:
            self._grid_rows.append(triplet_rows(real_a[:wanted], fake_b[:wanted], real_b[:wanted]))

    def on_validation_epoch_end(self) -> None:
        """Log the grid of the first ``grid_samples`` validation pairs, one pair a row."""
        if self._grid_rows:
            self.last_grid = log_image_grid(
                self.logger,
                tags.samples("input_output_target"),
                torch.cat(self._grid_rows),
                self.global_step,
                self.hparams.grid_dir,
                nrow=3,
            )
        self._grid_rows = []


def triplet_rows(real_a: torch.Tensor, fake_b: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
    """Interleave three batches so a 3-column grid shows input | output | target per row."""
    return torch.stack([real_a, fake_b, real_b], dim=1).flatten(0, 1).detach().cpu()
