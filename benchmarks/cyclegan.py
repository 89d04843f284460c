"""Training iterations per second of CycleGAN on this machine (CPU unless --device cuda).

One iteration is a full CycleGAN step as the stage runs it under a Lightning Trainer: both
generators forward and backward (GAN + cycle + identity losses), then both discriminators on
real images and pooled fakes, at batch 1. Rows: the paper's ResNet generators at their sizes
(resnet_6blocks at 128 px, resnet_9blocks at 256 px) and pix2pix's U-Net at the same sizes.
Synthetic images, so disk and decoding are not measured.

    python benchmarks/cyclegan.py [--steps 5] [--sizes 128 256] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Dataset

from src.cyclegan.model import CycleGANModule
from src.pix2pix.networks import count_parameters

GENERATORS = {128: ("resnet_6blocks", "unet_128"), 256: ("resnet_9blocks", "unet_256")}
WARMUP_STEPS = 1


class RandomImages(Dataset):
    """``{"A", "B"}`` pairs of random images in [-1, 1], as the unpaired data module yields."""

    def __init__(self, size: int, length: int) -> None:
        self.size = size
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(index)
        images = torch.rand(2, 3, self.size, self.size, generator=generator) * 2 - 1
        return {"A": images[0], "B": images[1]}


class StepTimer(L.Callback):
    """Wall time of every training batch after the warm-up ones."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step > WARMUP_STEPS:
            self.seconds.append(time.perf_counter() - self.started)


def iterations_per_second(net_g: str, size: int, steps: int, device: str) -> tuple[float, int]:
    """Median training iterations/s of CycleGAN with ``net_g`` at ``size`` px, and its G size."""
    torch.manual_seed(0)
    module = CycleGANModule({"netG": net_g}, {"netD": "basic", "input_nc": 3})
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_steps=steps + WARMUP_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(RandomImages(size, steps + WARMUP_STEPS), batch_size=1)
    trainer.fit(module, train_dataloaders=loader)
    median = sorted(timer.seconds)[len(timer.seconds) // 2]
    return 1.0 / median, count_parameters(module.generator_ab)


def main() -> None:
    """Time each configuration and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], choices=[128, 256])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(
        title=f"CycleGAN training, batch 1, {args.device}, {torch.get_num_threads()} threads"
    )
    for column in ("size", "generator", "G params", "it/s", "s/it"):
        table.add_column(column, justify="right")
    for size in args.sizes:
        for net_g in GENERATORS[size]:
            rate, params = iterations_per_second(net_g, size, args.steps, args.device)
            table.add_row(str(size), net_g, f"{params:,}", f"{rate:.3f}", f"{1 / rate:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
