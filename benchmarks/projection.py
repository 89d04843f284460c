"""Projection steps per second: the smoke chain's StyleGAN3-T (32 px) and the published 256-px
T config, in W and W+, with and without LPIPS (VGG16 on the render, random trunk: the cost is
the same as with ImageNet weights). One step is what ``src.latent.project`` does per iteration:
synthesis forward, the loss terms, backward into w (and StyleGAN2 noise), Adam. On CUDA
machines the same rows are timed on the GPU.

    python benchmarks/projection.py [--steps 5] [--skip-256]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from src.latent.perceptual import load_perceptual
from src.latent.projection import LatentStats, ProjectionSettings, project
from src.stylegan3.legacy import GENERATORS

SMOKE_T32 = {
    "z_dim": 32,
    "w_dim": 32,
    "img_resolution": 32,
    "channel_base": 2048,
    "channel_max": 32,
    "num_layers": 4,
    "num_critical": 1,
    "margin_size": 2,
    "num_fp16_res": 0,
}
T256 = {
    "z_dim": 512,
    "w_dim": 512,
    "img_resolution": 256,
    "channel_base": 32768,
    "channel_max": 512,
}


def steps_per_second(
    generator: torch.nn.Module, space: str, perceptual: torch.nn.Module | None, steps: int
) -> float:
    """Steps per second of a ``steps``-step projection (after a 1-step warm-up)."""
    device = next(generator.parameters()).device
    stats = LatentStats(generator.mapping.w_avg.detach(), 1.0)
    target = torch.zeros(3, generator.img_resolution, generator.img_resolution, device=device)
    weights = {"lpips_weight": 1.0 if perceptual else 0.0, "rec_weight": 1.0}
    project(
        generator,
        target,
        ProjectionSettings(1, space=space, **weights),
        stats=stats,
        perceptual=perceptual,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    project(
        generator,
        target,
        ProjectionSettings(steps, space=space, **weights),
        stats=stats,
        perceptual=perceptual,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    """Print a table of steps/s per generator, space and loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-256", action="store_true")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    configs = {"smoke T-32": SMOKE_T32, **({} if args.skip_256 else {"T-256": T256})}
    table = Table(title=f"projection steps/s ({torch.get_num_threads()} CPU threads)")
    for column in ("device", "generator", "num_ws", "space", "LPIPS", "steps/s"):
        table.add_column(column, justify="right")
    lpips = load_perceptual("torchvision", "random")
    for device in devices:
        for name, kwargs in configs.items():
            torch.manual_seed(0)
            generator = GENERATORS["stylegan3"](c_dim=0, img_channels=3, **kwargs)
            generator = generator.to(device).eval().requires_grad_(False)
            for space in ("w", "w+"):
                for perceptual in (None, lpips.to(device)):
                    rate = steps_per_second(generator, space, perceptual, args.steps)
                    table.add_row(
                        device.type,
                        name,
                        str(generator.num_ws),
                        space,
                        "yes" if perceptual else "no",
                        f"{rate:.2f}",
                    )
    Console().print(table)


if __name__ == "__main__":
    main()
