"""Tiny StyleGAN3 training runs for the training tests: a folder of 16 px images, options for
tiny T/R networks and an in-process Lightning fit without loggers or progress bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from src.stylegan3.__main__ import metrics_callback
from src.stylegan3.snapshots import Snapshots
from src.stylegan3.training import (
    StyleGAN3Training,
    TrainingOptions,
    discriminator_kwargs,
    generator_kwargs,
)
from tests.stylegan3.tiny import G_KWARGS

RESOLUTION = 16
BATCH = 4
TINY_G = {
    key: G_KWARGS[key]
    for key in (
        "z_dim",
        "w_dim",
        "mapping_kwargs",
        "channel_base",
        "channel_max",
        "num_layers",
        "num_critical",
        "margin_size",
    )
}
TINY_D = {"channel_base": 256, "channel_max": 32}


def write_images(folder: Path, count: int = 6, size: int = 20, seed: int = 0) -> Path:
    """``count`` random colour PNGs (``size`` px, resized by the dataset) under ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


def tiny_options(data: Path, architecture: str = "stylegan3-t", **changes: Any) -> TrainingOptions:
    """Options for a tiny network trained on ``data`` at 16 px, batch 4."""
    settings: dict[str, Any] = {
        "data": str(data),
        "resolution": RESOLUTION,
        "G_kwargs": generator_kwargs(architecture, RESOLUTION, BATCH, dict(TINY_G)),
        "D_kwargs": discriminator_kwargs(RESOLUTION, 0, 2, dict(TINY_D)),
        "batch": BATCH,
        "kimg": 0.008,
        "snap": 1000,
        "aug": "none",
        "grid_size": 4,
        "grid_columns": 4,
        "seed": 3,
    }
    settings.update(changes)
    return TrainingOptions(**settings)


def build(options: TrainingOptions, init_seed: int = 0) -> StyleGAN3Training:
    """The module for ``options`` with weights drawn from ``init_seed``."""
    torch.manual_seed(init_seed)
    return StyleGAN3Training(options)


def fit(
    module: StyleGAN3Training,
    out_dir: Path,
    ckpt_path: str | Path | None = None,
    callbacks: Sequence[L.Callback] = (),
    **trainer_kwargs: Any,
) -> L.Trainer:
    """Train ``module`` in this process until its ``kimg``; snapshots go to ``out_dir``."""
    options = module.options
    metrics_fn = metrics_callback(options, out_dir / "cache") if options.metrics else None
    module.extra_callbacks = [
        Snapshots(out_dir, options.snap, metrics_fn, grid_columns=options.grid_columns),
        *callbacks,
    ]
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": -1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
        **trainer_kwargs,
    }
    trainer = L.Trainer(**settings)
    trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return trainer
