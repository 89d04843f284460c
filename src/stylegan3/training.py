"""StyleGAN3 (and StyleGAN2) training as a LightningModule with manual optimisation.

One training step is the reference schedule: a G step (non-saturating loss), for StyleGAN2 every
``pl_interval`` steps a separate lazy path-length step, a D step (logistic loss, which also
feeds ADA's overfitting estimate), every ``r1_interval`` steps a separate lazy R1 step, then the
G_ema update, the image counter and ADA's p. StyleGAN2's generator also trains with style
mixing (``style_mixing``: the probability of a second latent taking over from a random layer).
Everything the schedule depends on (image counter, step counter, ADA state, best FID, the path
length mean, every rank's RNG) is saved in Lightning checkpoints, and the data order is a
function of the image counter, so a resumed run continues exactly where the interrupted one
stopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from src.common import tags
from src.common.checkpoint import load_state_dict_checked, save_checkpoint
from src.common.errors import UserError
from src.common.progress import TrainingPosition
from src.stylegan3.dataset import ImageFolderDataset, InfiniteSampler
from src.stylegan3.legacy import FORMAT, build_network, load_networks
from src.stylegan3.losses import (
    blur,
    blur_sigma,
    discriminator_loss,
    ema_beta,
    gamma_for_resolution,
    generator_loss,
    lazy_regularization,
    mix_styles,
    path_length_penalty,
    r1_penalty,
    sanitize_gradients,
    update_ema,
)
from src.stylegan3.networks import family_of, noise_kwargs

ARCHITECTURES = ("stylegan3-t", "stylegan3-r", "stylegan2")
AUGMENT_MODES = ("ada", "fixed", "none")
# Constructor arguments that change how a network trains or runs, not what its weights mean:
# a checkpoint may differ from the config in these.
TRAINING_ONLY_KWARGS = {
    "magnitude_ema_beta",
    "num_fp16_res",
    "conv_clamp",
    "freeze_layers",
    "mbstd_group_size",
    "fused_modconv_default",
    "w_avg_beta",
    "fp16_channels_last",
}
STATE_KEY = "stylegan3"


@dataclass
class TrainingOptions:
    """Everything one StyleGAN3 run needs; ``None`` fields take the reference defaults."""

    data: str
    resolution: int
    G_kwargs: dict[str, Any]
    D_kwargs: dict[str, Any]
    batch: int = 32
    # Images per forward/backward pass on one device; None: batch / devices (one pass).
    batch_gpu: int | None = None
    kimg: float = 5000
    snap: float = 50
    mirror: bool = False
    glr: float = 0.0025
    dlr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    gamma: float | None = None
    r1_interval: int = 16
    ema_kimg: float | None = None
    ema_rampup: float | None = 0.05
    blur_sigma: float = 0.0
    blur_fade_kimg: float | None = None
    aug: str = "ada"
    augpipe: str = "bgc"
    aug_p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500
    # StyleGAN2's regularisers (the StyleGAN3 configs leave them off): path length weight,
    # batch divisor, running-mean decay and lazy interval (G steps); style mixing probability.
    pl_weight: float = 0.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    pl_interval: int = 4
    style_mixing: float = 0.0
    family: str = "stylegan3"
    init_from: str | None = None
    metrics: list[str] = field(default_factory=list)
    metrics_num: int = 50000
    metrics_kwargs: dict[str, Any] = field(default_factory=dict)
    grid_size: int = 32
    grid_columns: int = 8
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.aug not in AUGMENT_MODES:
            raise UserError(f"aug: {self.aug!r} is not one of {', '.join(AUGMENT_MODES)}")
        if self.batch < 1 or self.kimg <= 0 or self.snap <= 0:
            raise UserError("batch, kimg and snap must be positive")
        if self.batch_gpu is not None and (self.batch_gpu < 1 or self.batch % self.batch_gpu):
            raise UserError(
                f"batch_gpu: {self.batch_gpu} must be positive and divide batch ({self.batch})"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.gamma is None:
            self.gamma = gamma_for_resolution(self.resolution)
        if self.ema_kimg is None:
            self.ema_kimg = self.batch * 10 / 32
        if self.blur_fade_kimg is None:
            self.blur_fade_kimg = self.batch * 200 / 32


def generator_kwargs(
    architecture: str, resolution: int, batch: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Official constructor kwargs of the generator for ``architecture`` (T, R or stylegan2).

    As in the reference options, R uses 1x1 convs, radial filters and doubles the channel
    base and maximum; the magnitude EMA's half-life is 20k images. StyleGAN2 trains with plain
    (unfused) modulated convs and runs inference with fused ones.
    """
    if architecture not in ARCHITECTURES:
        raise UserError(f"cfg: {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    if architecture == "stylegan2":
        return {
            "z_dim": 512,
            "w_dim": 512,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 32768,
            "channel_max": 512,
            "num_fp16_res": 4,
            "conv_clamp": 256,
            "fused_modconv_default": "inference_only",
            **overrides,
            "c_dim": 0,
            "img_resolution": resolution,
            "img_channels": 3,
        }
    kwargs: dict[str, Any] = {
        "z_dim": 512,
        "w_dim": 512,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 32768,
        "channel_max": 512,
        "num_fp16_res": 4,
        "conv_clamp": 256,
        "magnitude_ema_beta": 0.5 ** (batch / 20e3),
        **overrides,
        "c_dim": 0,
        "img_resolution": resolution,
        "img_channels": 3,
    }
    if architecture == "stylegan3-r":
        kwargs.update(
            conv_kernel=1,
            use_radial_filters=True,
            channel_base=kwargs["channel_base"] * 2,
            channel_max=kwargs["channel_max"] * 2,
        )
    return kwargs


def discriminator_kwargs(
    resolution: int, freeze_d: int, mbstd_group: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Official constructor kwargs of the StyleGAN2 residual discriminator."""
    return {
        "channel_base": 32768,
        "channel_max": 512,
        "num_fp16_res": 4,
        "conv_clamp": 256,
        **overrides,
        "c_dim": 0,
        "img_resolution": resolution,
        "img_channels": 3,
        "block_kwargs": {"freeze_layers": freeze_d},
        "mapping_kwargs": {},
        "epilogue_kwargs": {"mbstd_group_size": mbstd_group},
    }


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_mismatch(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Architecture kwargs set on both sides with different values, as ``key: theirs vs ours``."""
    mine, other = _flat(ours), _flat(theirs)
    return [
        f"{key} is {other[key]!r} in the checkpoint but {mine[key]!r} here"
        for key in sorted(set(mine) & set(other))
        if key.rsplit(".", 1)[-1] not in TRAINING_ONLY_KWARGS and mine[key] != other[key]
    ]


def init_networks_from(
    path: str, networks: dict[str, nn.Module], configs: dict[str, dict[str, Any]]
) -> None:
    """Copy G, G_ema and D from ``path`` (an official pickle or our checkpoint) into
    ``networks``; a differing architecture kwarg or any key/shape misfit is a UserError."""
    loaded = load_networks(path)
    for kind in ("G", "G_ema"):
        if family_of(loaded[kind]) != family_of(networks[kind]):
            raise UserError(
                f"init_from {path}: {kind} is a {family_of(loaded[kind])} generator but cfg "
                f"builds a {family_of(networks[kind])} one; choose the matching stylegan3.cfg"
            )
    for kind in ("G", "G_ema", "D"):
        config_kind = "D" if kind == "D" else "G"
        problems = config_mismatch(configs[config_kind], loaded["configs"][kind])
        if problems:
            raise UserError(
                f"init_from {path}: {kind} does not match the configured network: "
                f"{'; '.join(problems[:4])}; set the same values under stylegan3.G / stylegan3.D"
            )
        load_state_dict_checked(networks[kind], loaded[kind].state_dict(), f"{path} ({kind})")


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on GPUs, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StyleGAN3Training(L.LightningModule):
    """G, D, G_ema, the ADA pipe and the training schedule (see the module docstring)."""

    def __init__(self, options: TrainingOptions) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.options = options
        self.G_config = options.G_kwargs
        self.D_config = options.D_kwargs
        self.G = build_network("G", self.G_config, options.family)
        self.D = build_network("D", self.D_config)
        # G trains in training mode, G_ema (never trained, only averaged) stays in eval mode, as
        # in the reference: StyleGAN2 blocks pick fused or unfused modulated convs by it.
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Running mean of the path lengths, the target of the path length penalty (saved with
        # the schedule's state, so that older checkpoints still load).
        self.register_buffer("pl_mean", torch.zeros([]), persistent=False)
        if options.init_from:
            init_networks_from(
                options.init_from,
                {"G": self.G, "G_ema": self.G_ema, "D": self.D},
                {"G": self.G_config, "D": self.D_config},
            )
        self.d_trainable = [p for p in self.D.parameters() if p.requires_grad]
        self.augment_pipe: nn.Module | None = None
        self.ada: Any = None
        if options.aug != "none":
            self._build_augment()
        self.cur_nimg = 0
        self.iteration = 0
        self.best_fid = math.inf
        self.last_metrics: dict[str, float] = {}
        self._pending_rng: list[dict[str, Any]] | None = None
        self._step_started = 0.0
        self.dataset: ImageFolderDataset | None = None
        # Set by the stage (snapshots); handed to the Trainer through configure_callbacks.
        self.extra_callbacks: list[L.Callback] = []
        grid_z = torch.randn(
            [options.grid_size, self.G.z_dim], generator=torch.Generator().manual_seed(123)
        )
        self.register_buffer("grid_z", grid_z, persistent=False)

    def _build_augment(self) -> None:
        from src.stylegan3.augment import AdaController, AugmentPipe

        self.augment_pipe = AugmentPipe(preset=self.options.augpipe)
        self.augment_pipe.p.fill_(self.options.aug_p)
        if self.options.aug == "ada":
            self.ada = AdaController(
                self.augment_pipe,
                target=self.options.ada_target,
                interval=self.options.ada_interval,
                speed_kimg=self.options.ada_kimg,
                reduce=self._all_reduce_sum,
            )

    # ----------------------------------------------------------------------------- set-up

    @property
    def world_size(self) -> int:
        """Processes training together (1 outside a Trainer)."""
        return self.trainer.world_size if self._trainer is not None else 1

    @staticmethod
    def _all_reduce_sum(tensor: Tensor) -> Tensor:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(tensor)
        return tensor

    @property
    def batch_gpu(self) -> int:
        """Images per pass on one device: ``batch_gpu``, or the device's whole share."""
        return self.options.batch_gpu or self.options.batch // self.world_size

    def setup(self, stage: str) -> None:
        """Check the batch splits as the reference's train.py requires."""
        o = self.options
        if o.batch % self.world_size:
            raise UserError(f"batch ({o.batch}) must divide by the {self.world_size} devices")
        if o.batch % (self.world_size * self.batch_gpu):
            raise UserError(
                f"batch ({o.batch}) must be a multiple of devices ({self.world_size}) times "
                f"batch_gpu ({self.batch_gpu})"
            )
        epilogue = self.D_config.get("epilogue_kwargs") or {}
        group = epilogue.get("mbstd_group_size", 4)
        if epilogue.get("mbstd_num_channels", 1) > 0 and group and self.batch_gpu < group:
            raise UserError(
                f"batch_gpu ({self.batch_gpu}) cannot be smaller than mbstd_group ({group}): "
                "raise batch_gpu or lower mbstd_group"
            )

    def configure_callbacks(self) -> list[L.Callback]:
        return list(self.extra_callbacks)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        o = self.options
        g_settings = (
            lazy_regularization(o.glr, o.betas, o.pl_interval)
            if o.pl_weight > 0
            else {"lr": o.glr, "betas": o.betas}
        )
        opt_g = torch.optim.Adam(self.G.parameters(), eps=o.eps, **g_settings)
        d_settings = lazy_regularization(o.dlr, o.betas, o.r1_interval)
        opt_d = torch.optim.Adam(self.d_trainable, eps=o.eps, **d_settings)
        return [opt_g, opt_d]

    def train_dataloader(self) -> DataLoader:
        """Endless batches of ``batch / devices`` images, continuing from ``cur_nimg``."""
        o = self.options
        if self.dataset is None:
            self.dataset = ImageFolderDataset(o.data, o.resolution, mirror=o.mirror)
        per_device = o.batch // self.world_size
        sampler = InfiniteSampler(
            len(self.dataset),
            seed=o.seed,
            rank=self.global_rank,
            world=self.world_size,
            start=self.cur_nimg // self.world_size,
        )
        return DataLoader(
            self.dataset,
            batch_size=per_device,
            sampler=sampler,
            num_workers=o.num_workers,
            pin_memory=torch.cuda.is_available(),
            # Its own generator: creating the iterator must not draw from the global RNG,
            # which a resumed run restores exactly.
            generator=torch.Generator().manual_seed(o.seed),
        )

    # ---------------------------------------------------------------------------- training

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000

    @property
    def done(self) -> bool:
        return self.cur_nimg >= self.options.kimg * 1000

    def progress_position(self) -> TrainingPosition:
        """kimg shown of the run's kimg (and iterations, for the bar), for the progress bars."""
        total = math.ceil(self.options.kimg * 1000 / self.options.batch)
        label = f"kimg {self.kimg:.1f}/{self.options.kimg:g}"
        return TrainingPosition(self.iteration, total, label)

    def run_D(self, images: Tensor, sigma: float) -> Tensor:
        """D's logits for ``images`` after the blur and the augmentation pipe."""
        images = blur(images, sigma)
        if self.augment_pipe is not None:
            images = self.augment_pipe(images)
        return self.D(images, None)

    def _latents(self, count: int) -> Tensor:
        return torch.randn([count, self.G.z_dim], device=self.device)

    def run_G(self, z: Tensor, update_emas: bool = False) -> tuple[Tensor, Tensor]:
        """Fakes from the latents ``z`` and the ws they came from, with style mixing."""
        ws = self.G.mapping(z, None, update_emas=update_emas)
        if self.options.style_mixing > 0:
            other = self.G.mapping(torch.randn_like(z), None)
            ws = mix_styles(ws, other, self.options.style_mixing)
        return self.G.synthesis(ws, update_emas=update_emas), ws

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Under DDP, gradients are all-reduced only after a phase's last chunk."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return contextlib.nullcontext() if last or block is None else block()

    def _accumulate(
        self, chunks: list[tuple[Tensor, ...]], per_sample_loss: Callable[..., Tensor]
    ) -> Tensor:
        """Backward of each chunk's share of the batch mean (its sum / the device batch), so
        the accumulated gradients are those of one pass over the whole batch; returns the
        batch's mean loss (detached)."""
        total = sum(chunk[0].shape[0] for chunk in chunks)
        loss_sum = torch.zeros([], device=self.device)
        for index, chunk in enumerate(chunks):
            with self._gradient_sync(last=index == len(chunks) - 1):
                loss = per_sample_loss(*chunk).sum()
                self.manual_backward(loss / total)
            loss_sum += loss.detach()
        return loss_sum / total

    def _chunks(self, *tensors: Tensor) -> list[tuple[Tensor, ...]]:
        """The device batch split into ``batch_gpu`` passes (tensors zipped per pass)."""
        return list(zip(*(t.split(self.batch_gpu) for t in tensors), strict=True))

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        """One reference iteration over the device's batch, in ``batch_gpu`` passes with
        gradient accumulation (exactly one big batch's gradients)."""
        o = self.options
        opt_g, opt_d = self.optimizers()
        real = batch
        count = real.shape[0]
        sigma = blur_sigma(self.cur_nimg, o.blur_sigma, o.blur_fade_kimg)

        # G: non-saturating loss through a frozen D.
        self._set_d_trainable(False)
        opt_g.zero_grad(set_to_none=True)
        loss_g = self._accumulate(
            self._chunks(self._latents(count)),
            lambda z: generator_loss(self.run_D(self.run_G(z)[0], sigma)),
        )
        sanitize_gradients(list(self.G.parameters()))
        opt_g.step()

        # Lazy path length regularisation, its own G step every pl_interval iterations.
        if o.pl_weight > 0 and self.iteration % o.pl_interval == 0:
            images, ws = self.run_G(self._latents(max(count // o.pl_batch_shrink, 1)))
            penalty, self.pl_mean = path_length_penalty(images, ws, self.pl_mean, o.pl_decay)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward((penalty * o.pl_weight).mean() * o.pl_interval)
            sanitize_gradients(list(self.G.parameters()))
            opt_g.step()
            self.log(tags.train("pl_penalty"), penalty.mean().detach(), prog_bar=True)

        # D: logistic loss on fakes (G updates its EMAs here, as in the reference) and reals.
        self._set_d_trainable(True)
        logits: dict[str, list[Tensor]] = {"real": [], "fake": []}

        def d_loss(real_chunk: Tensor, z: Tensor) -> Tensor:
            with torch.no_grad():
                fake = self.run_G(z, update_emas=True)[0]
            fake_logits = self.run_D(fake, sigma)
            real_logits = self.run_D(real_chunk, sigma)
            if self.ada is not None:
                self.ada.accumulate(real_logits.detach())
            logits["real"].append(real_logits.detach())
            logits["fake"].append(fake_logits.detach())
            return discriminator_loss(real_logits, fake_logits)

        opt_d.zero_grad(set_to_none=True)
        loss_d = self._accumulate(self._chunks(real, self._latents(count)), d_loss)
        sanitize_gradients(self.d_trainable)
        opt_d.step()

        # Lazy R1, its own step every r1_interval iterations, weighted by the interval.
        if self.iteration % o.r1_interval == 0 and o.gamma > 0:
            penalties: list[Tensor] = []

            def r1_loss(real_chunk: Tensor) -> Tensor:
                real_tmp = real_chunk.detach().requires_grad_(True)
                real_logits = self.run_D(real_tmp, sigma)
                penalty = r1_penalty(real_tmp, real_logits)
                penalties.append(penalty.detach())
                return ((real_logits * 0).squeeze(1) + penalty * (o.gamma / 2)) * o.r1_interval

            opt_d.zero_grad(set_to_none=True)
            self._accumulate(self._chunks(real), r1_loss)
            sanitize_gradients(self.d_trainable)
            opt_d.step()
            self.log(tags.train("r1_penalty"), torch.cat(penalties).mean(), prog_bar=True)

        real_logits, fake_logits = torch.cat(logits["real"]), torch.cat(logits["fake"])
        batch_total = count * self.world_size
        beta = ema_beta(batch_total, self.cur_nimg, o.ema_kimg, o.ema_rampup)
        update_ema(self.G_ema, self.G, beta)
        self.cur_nimg += batch_total
        self.iteration += 1
        if self.ada is not None:
            self.ada.step(batch_total)
        self._log_progress(batch_total, loss_g, loss_d, real_logits, fake_logits)
        if self.done:
            self.trainer.should_stop = True

    def _set_d_trainable(self, trainable: bool) -> None:
        for param in self.d_trainable:
            param.requires_grad_(trainable)

    def _log_progress(
        self, batch_total: int, loss_g: Tensor, loss_d: Tensor, real: Tensor, fake: Tensor
    ) -> None:
        now = time.perf_counter()
        sec_per_kimg = (now - self._step_started) / (batch_total / 1000)
        self._step_started = now
        p = float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0
        values = {
            "kimg": self.kimg,
            "sec_per_kimg": sec_per_kimg,
            "ada_p": p,
            "loss_G": loss_g.detach(),
            "loss_D": loss_d.detach(),
            "logits_real": real.detach().mean(),
            "logits_fake": fake.detach().mean(),
            "peak_mem_gb": peak_memory_gb(self.device),
        }
        for name, value in values.items():
            self.log(tags.train(name), value, prog_bar=True)
        if self.ada is not None and math.isfinite(self.ada.rt):
            self.log(tags.train("ada_rt"), float(self.ada.rt))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.done:
            # Resumed from the final checkpoint (e.g. killed while exporting): nothing to train.
            self.trainer.should_stop = True
            return -1
        if self._pending_rng is not None:
            self._restore_rng(self._pending_rng)
            self._pending_rng = None
        self._step_started = self._step_started or time.perf_counter()
        return None

    def on_train_start(self) -> None:
        if self.cur_nimg == 0 and self._pending_rng is None:
            # Every rank draws its own latents and augmentations.
            torch.manual_seed(self.options.seed * 1000 + self.global_rank)
        self._step_started = time.perf_counter()

    # ------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample_grid(self, generator: nn.Module | None = None) -> Tensor:
        """G_ema's (or ``generator``'s) images for the fixed grid latents, on the CPU."""
        generator = self.G_ema if generator is None else generator
        noise = noise_kwargs(generator, "const")
        images = [generator(z, None, **noise).cpu() for z in self.grid_z.split(16)]
        return torch.cat(images).clamp(-1, 1)

    # ------------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {
            "cur_nimg": self.cur_nimg,
            "iteration": self.iteration,
            "best_fid": self.best_fid,
            "pl_mean": float(self.pl_mean),
            "metrics": dict(self.last_metrics),
            "ada": self.ada.state_dict() if self.ada is not None else None,
            "rng": self._gather_rng(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            raise UserError("the checkpoint was not written by StyleGAN3 training")
        self.cur_nimg = int(state["cur_nimg"])
        self.iteration = int(state["iteration"])
        self.best_fid = float(state["best_fid"])
        self.pl_mean.fill_(float(state.get("pl_mean", 0.0)))
        self.last_metrics = dict(state["metrics"])
        if self.ada is not None and state["ada"] is not None:
            self.ada.load_state_dict(state["ada"])
        self._pending_rng = state["rng"]

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's RNG state (rank order), so each continues its own stream."""
        mine = self._rng_state()
        if not (dist.is_available() and dist.is_initialized()):
            return [mine]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        return gathered

    def _restore_rng(self, states: list[dict[str, Any]]) -> None:
        if len(states) != self.world_size:
            torch.manual_seed(self.options.seed * 1000 + self.global_rank + self.iteration)
            return
        state = states[self.global_rank]
        torch.set_rng_state(state["cpu"].cpu())
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)

    # ---------------------------------------------------------------------------- export

    def network_checkpoint(self, source: str) -> dict[str, Any]:
        """G, G_ema and D in our StyleGAN3 checkpoint format (``legacy.load_networks``)."""
        checkpoint: dict[str, Any] = {"format": FORMAT, "source": source}
        for kind, config in (("G", self.G_config), ("G_ema", self.G_config), ("D", self.D_config)):
            module = getattr(self, kind)
            checkpoint[kind] = {
                "config": copy.deepcopy(config),
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            }
        checkpoint["augment_pipe"] = (
            {
                "preset": self.options.augpipe,
                "p": float(self.augment_pipe.p),
            }
            if self.augment_pipe is not None
            else None
        )
        checkpoint["training_set_kwargs"] = {
            "path": str(self.options.data),
            "resolution": self.options.resolution,
            "xflip": self.options.mirror,
            "kimg": self.kimg,
        }
        return checkpoint

    def export(self, path: str | Path, source: str) -> Path:
        """Write :meth:`network_checkpoint` to ``path`` atomically."""
        return save_checkpoint(self.network_checkpoint(source), path)
