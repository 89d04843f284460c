"""The U-GAT-IT / photo2cartoon training loop as a LightningModule (manual optimisation).

Each iteration updates the four critics (global and local, for A and B) on real images and
detached translations, then both generators on LSGAN, cycle, identity, CAM and (optionally)
face-ID losses, and clips every ``rho`` and ``w`` into [0, 1]. Learning rates stay constant for
the first half of ``iterations`` and fall linearly to 0 over the second half, step by step as
the releases do (:func:`release_lr_factor`).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from src.common import tags
from src.common.faceid import FaceIdLoss
from src.common.visual import log_image_grid
from src.photo2cartoon.networks import Discriminator, Generator, clip_rho_and_w

# Reference default generator width by model kind.
DEFAULT_NGF = {"ugatit": 64, "photo2cartoon": 32}
CRITICS = ("dis_ga", "dis_la", "dis_gb", "dis_lb")
# The tag (under samples/) and PNG name of the sample grid: rows A, CAM, A->B, A->B->A, then B.
SAMPLES_NAME = "translations"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (the critics' loss is weighted by ``adv``).

    The defaults are photo2cartoon's release (its ``train.py``: adv 1, cycle 50, identity 10,
    cam 1000, faceid 1); :data:`RELEASE_WEIGHTS` has U-GAT-IT's beside them.
    """

    adv: float = 1.0
    cycle: float = 50.0
    identity: float = 10.0
    cam: float = 1000.0
    faceid: float = 1.0


# The published recipes, the one source of every default weight. U-GAT-IT (its main.py): cycle
# 10 and no face-ID loss; photo2cartoon: LossWeights' defaults.
RELEASE_WEIGHTS = {
    "photo2cartoon": LossWeights(),
    "ugatit": LossWeights(cycle=10.0, faceid=0.0),
}


def release_weights(kind: str, **overrides: float | None) -> LossWeights:
    """The release's weights for model ``kind``, with every non-None override applied."""
    chosen = {name: float(value) for name, value in overrides.items() if value is not None}
    return replace(RELEASE_WEIGHTS[kind], **chosen)


def release_lr_factor(iterations: int, decay: bool = True) -> Callable[[int], float]:
    """LR factor of iteration ``done`` (0-based), as the U-GAT-IT / photo2cartoon releases set it.

    The releases count steps from 1 and, at the start of every step past ``iterations // 2``,
    lower the lr by ``lr / (iterations // 2)``: step ``s`` runs at
    ``1 - max(0, s - half) / half``, the first decayed step at ``1 - 1 / half`` and the last
    (for an even count) at 0. Clamped at 0: with an odd count the releases' last step would run
    at ``-lr / half``. A plain function rather than a callable object: LambdaLR stores a callable
    object's attributes in checkpoints, which would pin a resumed run to the old ``iterations``.
    """
    half = iterations // 2

    def factor(done: int) -> float:
        if not decay:
            return 1.0
        step = done + 1
        return max(0.0, 1.0 - max(0, step - half) / max(1, half))

    return factor


def jet(values: torch.Tensor) -> torch.Tensor:
    """A blue-cyan-yellow-red colour ramp of ``N x 1 x H x W`` values in [0, 1], RGB in [0, 1]."""
    channels = [(1.5 - (4 * values - centre).abs()).clamp(0, 1) for centre in (3.0, 2.0, 1.0)]
    return torch.cat(channels, dim=1)


def heatmap_overlay(images: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    """``images`` (in [-1, 1]) half-blended with their CAM ``heatmap``, normalised per image."""
    low = heatmap.amin(dim=(1, 2, 3), keepdim=True)
    high = heatmap.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (heatmap - low) / (high - low).clamp_min(1e-8)
    scaled = F.interpolate(scaled, size=images.shape[2:], mode="bilinear", align_corners=False)
    return 0.5 * images + 0.5 * (jet(scaled) * 2 - 1)


def _lsgan(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(logits, torch.full_like(logits, target))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class Photo2CartoonTraining(L.LightningModule):
    """Two generators (A->B, B->A) and four CAM critics, trained as U-GAT-IT / photo2cartoon.

    ``generator`` holds :class:`Generator` arguments (``kind``, ``ngf``, ``img_size``, ``light``,
    ``n_res``); ``faceid_weights`` is the MobileFaceNet file, or None to train without the
    face-ID loss (one warning when its weight is not 0).
    """

    def __init__(
        self,
        *,
        generator: dict[str, Any],
        ndf: int,
        global_layers: int = 7,
        local_layers: int = 5,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-4,
        iterations: int = 1_000_000,
        decay: bool = True,
        weights: dict[str, float] | None = None,
        faceid_weights: str | None = None,
        sample_every: int = 1000,
        sample_count: int = 5,
        png_dir: str | None = None,
        metrics: tuple[str, ...] = (),
        metrics_every: int = 10000,
        metrics_real: str | None = None,
        metrics_cache: str | None = None,
        inception: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator_config = dict(generator)
        self.gen_a2b = Generator(**generator)
        self.gen_b2a = Generator(**generator)
        self.dis_ga = Discriminator(3, ndf, global_layers)
        self.dis_gb = Discriminator(3, ndf, global_layers)
        self.dis_la = Discriminator(3, ndf, local_layers)
        self.dis_lb = Discriminator(3, ndf, local_layers)
        self.weights = release_weights(
            str(generator.get("kind", "photo2cartoon")), **(weights or {})
        )
        self.faceid: FaceIdLoss | None = None
        if self.weights.faceid > 0:
            if faceid_weights:
                self.faceid = FaceIdLoss(faceid_weights)
            else:
                warnings.warn(
                    "photo2cartoon: no faceid_weights (MobileFaceNet) set, so the face-ID loss "
                    "is off; set faceid_weights=<model_mobilefacenet.pth> to use it",
                    stacklevel=2,
                )
        self.iterations = iterations
        self.sample_every = sample_every
        self.sample_count = sample_count
        self.png_dir = png_dir
        self.samples: tuple[torch.Tensor, torch.Tensor] | None = None
        self.metrics = tuple(metrics)
        self.metrics_every = metrics_every
        self.metrics_real = metrics_real
        self.metrics_cache = metrics_cache
        self.inception = inception
        self.extractor: nn.Module | None = None

    # The face-ID network is frozen and loaded from its own file: keep it out of checkpoints.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The module's state without the frozen face-recognition network."""
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("faceid.")}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint written by :meth:`state_dict` (face-ID weights come from file)."""
        return super().load_state_dict(
            state_dict, strict=strict and self.faceid is None, assign=assign
        )

    @property
    def iteration(self) -> int:
        """Finished training iterations (each takes one D step and one G step)."""
        return self.trainer.global_step // 2 if self._trainer is not None else 0

    def configure_optimizers(self) -> Any:
        """Adam for both generators and for the four critics, with the linear-decay schedule."""
        hp = self.hparams
        generators = itertools.chain(self.gen_a2b.parameters(), self.gen_b2a.parameters())
        critics = itertools.chain(*(getattr(self, name).parameters() for name in CRITICS))
        options = {"lr": hp.lr, "betas": tuple(hp.betas), "weight_decay": hp.weight_decay}
        opt_g = torch.optim.Adam(generators, **options)
        opt_d = torch.optim.Adam(critics, **options)
        decay = release_lr_factor(hp.iterations, hp.decay)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]
        names = (tags.LR_G, tags.LR_D)
        configs = [
            {"scheduler": s, "interval": "step", "name": name}
            for s, name in zip(schedulers, names, strict=True)
        ]
        return [opt_g, opt_d], configs

    def _critic_losses(
        self, critic: nn.Module, images: torch.Tensor, target: float
    ) -> torch.Tensor:
        logits, cam_logits, _ = critic(images)
        return _lsgan(logits, target) + _lsgan(cam_logits, target)

    def discriminator_loss(
        self,
        real_a: torch.Tensor,
        real_b: torch.Tensor,
        fake_a: torch.Tensor,
        fake_b: torch.Tensor,
    ) -> torch.Tensor:
        """LSGAN loss of the four critics: reals to 1, (detached) translations to 0."""
        total = real_a.new_zeros(())
        for critic, real, fake in (
            (self.dis_ga, real_a, fake_a),
            (self.dis_la, real_a, fake_a),
            (self.dis_gb, real_b, fake_b),
            (self.dis_lb, real_b, fake_b),
        ):
            total = total + self._critic_losses(critic, real, 1.0)
            total = total + self._critic_losses(critic, fake, 0.0)
        return self.weights.adv * total

    def generator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every generator loss term (unweighted) and the weighted ``total``."""
        fake_a2b, cam_a2b, _ = self.gen_a2b.forward_with_attention(real_a)
        fake_b2a, cam_b2a, _ = self.gen_b2a.forward_with_attention(real_b)
        fake_a2b2a = self.gen_b2a(fake_a2b)
        fake_b2a2b = self.gen_a2b(fake_b2a)
        fake_a2a, cam_a2a, _ = self.gen_b2a.forward_with_attention(real_a)
        fake_b2b, cam_b2b, _ = self.gen_a2b.forward_with_attention(real_b)
        adv = real_a.new_zeros(())
        for critic, fake in (
            (self.dis_ga, fake_b2a),
            (self.dis_la, fake_b2a),
            (self.dis_gb, fake_a2b),
            (self.dis_lb, fake_a2b),
        ):
            adv = adv + self._critic_losses(critic, fake, 1.0)
        losses = {
            "adv": adv,
            "cycle": F.l1_loss(fake_a2b2a, real_a) + F.l1_loss(fake_b2a2b, real_b),
            "identity": F.l1_loss(fake_a2a, real_a) + F.l1_loss(fake_b2b, real_b),
            # The translated domain's input counts as "other domain" (1), identity input as 0.
            "cam": _bce(cam_b2a, 1.0)
            + _bce(cam_a2a, 0.0)
            + _bce(cam_a2b, 1.0)
            + _bce(cam_b2b, 0.0),
        }
        if self.faceid is not None:
            losses["faceid"] = self.faceid(real_a, fake_a2b) + self.faceid(real_b, fake_b2a)
        w = asdict(self.weights)
        losses["total"] = sum(w[name] * value for name, value in losses.items())
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One D step, one G step, the clippers and the schedulers."""
        real_a, real_b = batch["A"], batch["B"]
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()

        with torch.no_grad():
            fake_b, fake_a = self.gen_a2b(real_a), self.gen_b2a(real_b)
        self.toggle_optimizer(opt_d)
        d_loss = self.discriminator_loss(real_a, real_b, fake_a, fake_b)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        losses = self.generator_losses(real_a, real_b)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(losses["total"])
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        clip_rho_and_w(self.gen_a2b)
        clip_rho_and_w(self.gen_b2a)
        sched_g.step()
        sched_d.step()

        logs = {
            tags.loss_g(None if name == "total" else name): value.detach()
            for name, value in losses.items()
        }
        logs[tags.LOSS_D] = d_loss.detach()
        logs.update({tags.train(name): value for name, value in self.norm_statistics().items()})
        self.log_dict(logs, prog_bar=False)
        self.log("g", losses["total"].detach(), prog_bar=True, logger=False)
        self.log("d", d_loss.detach(), prog_bar=True, logger=False)

    def norm_statistics(self) -> dict[str, torch.Tensor]:
        """Mean, min and max of every ``rho`` and Soft-AdaLIN ``w`` of the A->B generator."""
        stats = {}
        for label, suffixes in (("rho", ("rho",)), ("w", ("w_gamma", "w_beta"))):
            values = [
                p.detach().flatten()
                for name, p in self.gen_a2b.named_parameters()
                if name.rsplit(".", 1)[-1] in suffixes
            ]
            if values:
                flat = torch.cat(values)
                stats.update(
                    {
                        f"{label}_mean": flat.mean(),
                        f"{label}_min": flat.min(),
                        f"{label}_max": flat.max(),
                    }
                )
        return stats

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Sample grid every ``sample_every`` iterations, FID/KID every ``metrics_every``, and
        both at the last iteration."""
        done = self.iteration
        if self.sample_every > 0 and (done % self.sample_every == 0 or done >= self.iterations):
            self.log_samples()
        if self.metrics and (done % self.metrics_every == 0 or done >= self.iterations):
            self.log_metrics()

    def log_metrics(self) -> dict[str, float]:
        """FID/KID of every test photo's translation against the test cartoons (``testB``)."""
        from src.common.metrics import build_extractor, compute_metrics

        dataset = self.trainer.datamodule.val_set
        if dataset is None or not self.metrics_real or not self.trainer.is_global_zero:
            return {}
        if self.extractor is None:
            self.extractor = build_extractor(self.inception)
        count = len(dataset.paths_a)

        def translations() -> Any:
            for start in range(0, count, 8):
                batch = torch.stack([dataset[i]["A"] for i in range(start, min(count, start + 8))])
                yield self.translate(batch.to(self.device))

        result = compute_metrics(
            translations(),
            self.metrics_real,
            metrics=self.metrics,
            num=count,
            extractor=self.extractor,
            cache_dir=self.metrics_cache,
            resolution=self.generator_config.get("img_size"),
            device=self.device,
            progress=False,
        )
        values = {k: float(result[k]) for k in (*self.metrics, "kid_std") if k in result}
        self.log_dict({tags.metric(k): v for k, v in values.items()}, rank_zero_only=True)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        rank_zero_info(f"photo2cartoon: iteration {self.iteration}: {shown} ({result.extractor})")
        return values

    @torch.no_grad()
    def translate(self, images: torch.Tensor) -> torch.Tensor:
        """A->B translations in eval mode (the generator's mode is restored)."""
        was_training = self.gen_a2b.training
        self.gen_a2b.eval()
        try:
            return self.gen_a2b(images)
        finally:
            self.gen_a2b.train(was_training)

    def fixed_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``sample_count`` validation (else training) images of each domain."""
        if self.samples is None:
            datamodule = self.trainer.datamodule
            dataset = datamodule.val_set if datamodule.val_set is not None else datamodule.train_set
            count = min(self.sample_count, len(dataset))
            items = [dataset[i] for i in range(count)]
            self.samples = (
                torch.stack([item["A"] for item in items]),
                torch.stack([item["B"] for item in items]),
            )
        return self.samples

    @torch.no_grad()
    def sample_grid(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """Rows: A, CAM of A->B on A, A->B, A->B->A, then the same for B (columns: samples).

        Runs under ``no_grad`` in eval mode (the reference kept graphs alive here and ran out of
        memory) and restores the generators' mode.
        """
        was_training = self.gen_a2b.training
        self.gen_a2b.eval()
        self.gen_b2a.eval()
        rows = []
        try:
            for real, forward, back in (
                (real_a, self.gen_a2b, self.gen_b2a),
                (real_b, self.gen_b2a, self.gen_a2b),
            ):
                fake, _, heatmap = forward.forward_with_attention(real)
                rows += [real, heatmap_overlay(real, heatmap), fake, back(fake)]
        finally:
            self.gen_a2b.train(was_training)
            self.gen_b2a.train(was_training)
        return torch.cat(rows).clamp(-1, 1)

    def log_samples(self) -> None:
        """Write the sample grid to TensorBoard and ``png_dir`` (rank 0 only)."""
        if not self.trainer.is_global_zero:
            return
        real_a, real_b = (t.to(self.device) for t in self.fixed_samples())
        grid = self.sample_grid(real_a, real_b)
        png_dir = os.fspath(self.png_dir) if self.png_dir else None
        tag = tags.samples(SAMPLES_NAME)
        log_image_grid(self.logger, tag, grid, self.iteration, png_dir, nrow=len(real_a))
