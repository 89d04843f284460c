"""``python -m src.encoder +experiment=...``: train an e4e / ReStyle encoder (the chain's stage).

Reads aligned faces (``encoder.data``) and a frozen generator (``encoder.generator``), trains
with :class:`src.encoder.module.EncoderTraining` and writes ``encoder.pt`` (our encoder file:
config, weights, latent average), ``metrics.json`` (held-out L2 / PSNR (/ LPIPS / identity)
of the reconstructions and, as the baseline, of the latent average's picture) and
``reconstruction.png`` (photo | latent average | reconstruction). An interrupted run continues
from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from src.common.checkpoint import load_checkpoint
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.training import make_trainer, rank_shared_resume_checkpoint
from src.common.visual import tensor_grid
from src.encoder.checkpoints import save_encoder
from src.encoder.module import EncoderTraining, reconstruction_figures
from src.encoder.networks import IRSEEncoder, build_encoder
from src.encoder.toonify import load_stylegan
from src.stylegan3.dataset import ImageFolderDataset

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.json"
GRID_FILE = "reconstruction.png"


def start_from_pretrained(encoder: IRSEEncoder, path: str) -> None:
    """Load IR-SE50 backbone weights (``input_layer.*``, ``body.*``) from ``path``; with 6 input
    channels the RGB filters go to the photo's channels and the rest keep their init (ReStyle)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not an IR-SE50 state dict; set encoder.backbone.pretrained")
    own = encoder.state_dict()
    picked = {
        k: v for k, v in state.items() if k.startswith(("input_layer.", "body.")) and k in own
    }
    if not picked:
        raise UserError(
            f"{path} holds no IR-SE input_layer/body weights (encoder.backbone.pretrained)"
        )
    stem = picked.get("input_layer.0.weight")
    if stem is not None and stem.shape[1] != own["input_layer.0.weight"].shape[1]:
        widened = own["input_layer.0.weight"].clone()
        widened[:, : stem.shape[1]] = stem
        picked["input_layer.0.weight"] = widened
    wrong = [k for k, v in picked.items() if v.shape != own[k].shape]
    if wrong:
        raise UserError(f"{path}: {len(wrong)} backbone tensors do not fit, e.g. {wrong[0]}")
    encoder.load_state_dict(picked, strict=False)


def optional_target(node: Any) -> Any:
    """An instantiated ``_target_`` node, or None."""
    return instantiate(node) if node else None


def write_reconstructions(module: EncoderTraining, images: torch.Tensor, path: Path) -> dict:
    """The held-out figures (encoder and latent-average baseline) and the photo | average |
    reconstruction grid."""
    fake, average = module.reconstruct(images)
    ours = reconstruction_figures(fake, images, module.lpips, module.identity)
    base = reconstruction_figures(average, images, module.lpips, module.identity)
    rows = torch.stack([images, average, fake.clamp(-1, 1)], dim=1).flatten(0, 1)
    grid = tensor_grid(rows, nrow=3)
    save_image(Image.fromarray(grid.permute(1, 2, 0).numpy()), path)
    return {
        "encoder": {k: round(float(v), 5) for k, v in ours.items()},
        "latent_average": {k: round(float(v), 5) for k, v in base.items()},
        "held_out": len(images),
    }


def train(ctx: StageContext) -> list[str]:
    """The stage function: build, train, export ``encoder.pt`` and the held-out figures."""
    p = ctx.params
    generator = load_stylegan(p.generator, str(p.network), "encoder.generator")
    resolution = int(generator.img_resolution)
    config = {
        "kind": str(p.kind),
        "n_styles": int(generator.num_ws),
        "w_dim": int(generator.w_dim),
        "input_size": int(p.input_size),
        "widths": list(p.backbone.widths),
        "units": list(p.backbone.units),
        "se_reduction": p.backbone.se_reduction,
    }
    encoder = build_encoder(config)
    if p.backbone.pretrained:
        start_from_pretrained(encoder, str(p.backbone.pretrained))
    weights = OmegaConf.to_container(p.losses, resolve=True)
    val_set = ImageFolderDataset(p.val_data, resolution)
    val_images = val_set.images[: int(p.val_count)].float() / 127.5 - 1
    module = EncoderTraining(
        encoder,
        generator,
        lr=float(p.lr),
        d_lr=float(p.d_lr),
        weights=weights,  # type: ignore[arg-type]
        iterations=int(p.iterations),
        progressive_start=None if p.progressive_start is None else int(p.progressive_start),
        progressive_step_every=int(p.progressive_step_every),
        lpips=optional_target(p.lpips),
        identity=optional_target(p.identity),
        train_set=ImageFolderDataset(p.data, resolution, mirror=bool(p.mirror)),
        batch_size=int(p.batch_size),
        num_workers=int(p.num_workers),
        seed=int(ctx.cfg.seed),
    )
    val_loader = DataLoader(
        torch.utils.data.TensorDataset(val_images),
        batch_size=int(p.batch_size),
        collate_fn=lambda items: torch.stack([item[0] for item in items]),
    )
    optimizers = 2 if module.discriminator is not None else 1
    strategy = OmegaConf.select(ctx.cfg, "trainer.strategy", default="auto")
    trainer = make_trainer(
        ctx.cfg,
        # The encoder's step leaves the discriminator's weights without gradients and the
        # discriminator's step the encoder's (and inactive progressive offsets get none).
        strategy="ddp_find_unused_parameters_true" if strategy == "ddp" else strategy,
        max_steps=int(p.steps) * optimizers,
        max_epochs=-1,
        val_check_interval=int(p.val_every),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        # The module's own sampler splits the data between ranks and resumes where it stopped.
        use_distributed_sampler=False,
    )
    ckpt = rank_shared_resume_checkpoint(ctx)
    trainer.fit(module, val_dataloaders=val_loader, ckpt_path=str(ckpt) if ckpt else None)
    outputs = [ENCODER_FILE, METRICS_FILE, GRID_FILE]
    if trainer.is_global_zero:
        module.encoder.progressive_stage = None
        save_encoder(ctx.out_dir / ENCODER_FILE, module.encoder.eval(), module.latent_avg)
        metrics = write_reconstructions(module, val_images, ctx.out_dir / GRID_FILE)
        atomic_write_json(ctx.out_dir / METRICS_FILE, metrics)
        ours, base = metrics["encoder"], metrics["latent_average"]
        print(
            f"encoder: held-out PSNR {ours['psnr']:.2f} dB (latent average {base['psnr']:.2f}), "
            f"L2 {ours['l2']:.4f} (latent average {base['l2']:.4f}) on {len(val_images)} faces"
        )
    return outputs


def main() -> None:
    """Entry point of ``python -m src.encoder``."""
    run_stage("encoder", train)


if __name__ == "__main__":
    main()
