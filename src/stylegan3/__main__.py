"""``python -m src.stylegan3 +experiment=...``: train or fine-tune a StyleGAN3, or a StyleGAN2
with ``stylegan3.cfg=stylegan2`` (the chain's
``stylegan3`` stage, and ``stylegan3_photo`` through ``--config-name=stylegan3_photo``).

Writes ``network-final.pt`` (our StyleGAN3 checkpoint format, see ``legacy.load_networks``),
Lightning checkpoints under ``checkpoints/`` (``last.ckpt``, ``best.ckpt`` with metrics on),
image grids under ``grids/`` and, when fine-tuning, ``init_vs_final.png``: the same seeds
drawn by the starting generator (top) and by the fine-tuned one (bottom).
See ``configs/stylegan3/default.yaml`` for every option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.stage import StageContext, run_stage

# Rank 0 tells the DDP processes Lightning starts which checkpoint it resumes from.
RESUME_ENV = "TOONFORGE_SG3_RESUME"
FINAL_NETWORK = "network-final.pt"
COMPARISON = "init_vs_final.png"


def training_options(params: DictConfig, seed: int) -> Any:
    """:class:`TrainingOptions` from the stage's config node."""
    from src.stylegan3.training import (
        TrainingOptions,
        discriminator_kwargs,
        generator_kwargs,
    )

    p = OmegaConf.to_container(params, resolve=True)
    assert isinstance(p, dict)
    resolution, batch = int(p["resolution"]), int(p["batch"])
    fine_tuning = bool(p.get("init_from"))
    architecture = str(p["cfg"])
    stylegan2 = architecture == "stylegan2"
    default_blur = 10.0 if architecture == "stylegan3-r" and not fine_tuning else 0.0

    def preset(key: str, for_stylegan2: float, otherwise: float) -> float:
        value = p.get(key)
        return float(value) if value is not None else (for_stylegan2 if stylegan2 else otherwise)

    g_overrides, d_overrides = dict(p.get("G") or {}), dict(p.get("D") or {})
    if p.get("fp32"):
        # As the reference's --fp32: no float16 layers and no activation clamp.
        for overrides in (g_overrides, d_overrides):
            overrides.update(num_fp16_res=0, conv_clamp=None)
    return TrainingOptions(
        data=str(p["data"]),
        resolution=resolution,
        G_kwargs=generator_kwargs(architecture, resolution, batch, g_overrides),
        D_kwargs=discriminator_kwargs(
            resolution, int(p["freeze_d"]), int(p["mbstd_group"]), d_overrides
        ),
        batch=batch,
        batch_gpu=None if p.get("batch_gpu") is None else int(p["batch_gpu"]),
        kimg=float(p["kimg"]),
        snap=float(p["snap"]),
        mirror=bool(p["mirror"]),
        glr=preset("glr", 0.002, 0.0025),
        dlr=float(p["dlr"]),
        betas=tuple(p["betas"]),
        eps=float(p["eps"]),
        gamma=p["gamma"],
        r1_interval=int(p["r1_interval"]),
        ema_kimg=p["ema_kimg"],
        # Fine-tuning starts from a trained G_ema: no ramp-up, no blur, faster ADA (reference).
        ema_rampup=None if fine_tuning else p["ema_rampup"],
        blur_sigma=default_blur if p["blur_sigma"] is None else float(p["blur_sigma"]),
        blur_fade_kimg=p["blur_fade_kimg"],
        aug=str(p["aug"]),
        augpipe=str(p["augpipe"]),
        aug_p=float(p["aug_p"]),
        ada_target=float(p["ada_target"]),
        ada_interval=int(p["ada_interval"]),
        ada_kimg=float(p["ada_kimg"] or (100 if fine_tuning else 500)),
        pl_weight=preset("pl_weight", 2.0, 0.0),
        pl_batch_shrink=int(p.get("pl_batch_shrink") or 2),
        pl_decay=float(p.get("pl_decay") or 0.01),
        pl_interval=int(p.get("pl_interval") or 4),
        style_mixing=preset("style_mixing", 0.9, 0.0),
        family="stylegan2" if stylegan2 else "stylegan3",
        init_from=str(p["init_from"]) if fine_tuning else None,
        metrics=list(p.get("metrics") or []),
        metrics_num=int(p["metrics_num"]),
        metrics_kwargs=dict(p.get("metrics_kwargs") or {}),
        grid_size=int(p["grid_size"]),
        grid_columns=int(p["grid_columns"]),
        num_workers=int(p["num_workers"]),
        seed=seed,
    )


def resume_checkpoint(ctx: StageContext) -> Path | None:
    """The shared resume rule (``src.common.training.resume_checkpoint``); DDP processes that
    Lightning starts take the checkpoint rank 0 chose."""
    from src.common.training import resume_checkpoint as stage_resume_checkpoint

    if os.environ.get("LOCAL_RANK", "0") != "0" and RESUME_ENV in os.environ:
        return Path(os.environ[RESUME_ENV]) if os.environ[RESUME_ENV] else None
    return stage_resume_checkpoint(ctx)


def metrics_callback(options: Any, cache_dir: Path) -> Any:
    """A function computing the configured metrics for a module's G_ema, or None."""
    if not options.metrics:
        return None
    from src.stylegan3.metrics import training_metrics

    inception = options.metrics_kwargs.get("inception")
    if inception and not Path(inception).is_file():
        # Found now rather than at the first snapshot, hours into training.
        raise UserError(f"metrics_kwargs.inception: {inception} does not exist; fix the path")

    return training_metrics(options, cache_dir)


def save_comparison(module: Any, init_from: str, path: Path) -> float:
    """Grid of the starting generator's samples over the fine-tuned one's, same seeds; returns
    their mean absolute pixel difference (in [-1, 1] units)."""
    from PIL import Image

    from src.common.images import save_image
    from src.common.visual import contact_sheet, tensor_grid
    from src.stylegan3.legacy import load_networks

    start = load_networks(init_from)["G_ema"].to(module.device).eval()
    before, after = module.sample_grid(start), module.sample_grid()
    columns = module.options.grid_columns
    pictures = [
        Image.fromarray(tensor_grid(images, columns).permute(1, 2, 0).numpy())
        for images in (before, after)
    ]
    sheet = contact_sheet(pictures, columns=1, captions=["start (init_from)", "fine-tuned"])
    save_image(sheet, path)
    return float((before - after).abs().mean())


def train(ctx: StageContext) -> list[str]:
    """The stage function: build, (re)start training, export ``network-final.pt``."""
    import lightning as L

    from src.common.training import make_trainer
    from src.stylegan3.precision import stylegan_trainer_precision
    from src.stylegan3.snapshots import Snapshots
    from src.stylegan3.training import StyleGAN3Training

    options = training_options(ctx.params, int(ctx.cfg.seed))
    ckpt = resume_checkpoint(ctx)
    os.environ[RESUME_ENV] = str(ckpt or "")
    module = StyleGAN3Training(options)
    cache_dir = Path(ctx.cfg.paths.run_dir) / "cache" / "metrics"
    module.extra_callbacks = [
        Snapshots(
            ctx.out_dir,
            options.snap,
            metrics_callback(options, cache_dir),
            grid_columns=options.grid_columns,
        )
    ]
    strategy = OmegaConf.select(ctx.cfg, "trainer.strategy", default="auto")
    trainer: L.Trainer = make_trainer(
        ctx.cfg,
        # G's step leaves D's weights without gradients and D's steps G's: DDP must expect that.
        strategy="ddp_find_unused_parameters_true" if strategy == "ddp" else strategy,
        precision=stylegan_trainer_precision(ctx.cfg, ctx.stage),
        max_epochs=-1,
        max_steps=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        # Snapshots write the checkpoints; Lightning's default per-epoch one would never fire.
        enable_checkpointing=False,
    )
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    outputs = [FINAL_NETWORK, "checkpoints/last.ckpt"]
    if trainer.is_global_zero:
        module.export(ctx.out_dir / FINAL_NETWORK, source=f"toonforge {ctx.stage}")
        if options.init_from:
            change = save_comparison(module, options.init_from, ctx.out_dir / COMPARISON)
            print(f"{ctx.stage}: mean |start - fine-tuned| over the grid = {change:.3f}")
            outputs.append(COMPARISON)
    return outputs


if __name__ == "__main__":
    run_stage("stylegan3", train)
