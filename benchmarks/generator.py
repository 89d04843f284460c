"""Images per second of the StyleGAN3 and StyleGAN2 generators (and of a G+D training step).

Configs: a small T generator (64 px, channel_base 4096, channel_max 128: the size the smoke
chain trains), the published 256-px T config (channel_base 32768, channel_max 512) and the
StyleGAN3 repository's 256-px stylegan2 config (channel_base 16384, mapping 2 layers: the
stylegan2-ffhqu-256x256.pkl that toonify_sg2_256 fine-tunes; noise_mode const), each at
batch 1 and 4. "G fwd" is one forward pass under no_grad; "G+D fwd/bwd" is G forward, D forward
and the backward of D's non-saturating loss through both networks, as in a generator step.
On CUDA machines the same rows are timed on the GPU (ops with impl='auto').

    python benchmarks/generator.py [--repeats 2] [--skip-256] [--batches 1 4] [--train-batches 1]

Memory: the 256-px G+D step peaks at 7.3 GB at batch 1 on CPU (the 276 px layers' activations
at 2x internal upsampling are kept for backward), so batch 4 does not fit a 24 GB machine;
--train-batches picks the T-256 batches that also run the G+D step (default 1; the small
config runs it at every batch).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from src.stylegan3.legacy import GENERATORS
from src.stylegan3.networks import Discriminator, noise_kwargs

CONFIGS = {
    "T-64 small": ("stylegan3", {"img_resolution": 64, "channel_base": 4096, "channel_max": 128}),
    "T-256": ("stylegan3", {"img_resolution": 256, "channel_base": 32768, "channel_max": 512}),
    "SG2-256": (
        "stylegan2",
        {
            "img_resolution": 256,
            "channel_base": 16384,
            "channel_max": 512,
            "mapping_kwargs": {"num_layers": 2},
        },
    ),
}
LARGE = ("T-256", "SG2-256")


def seconds_per_call(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    name: str,
    family: str,
    config: dict,
    batch: int,
    repeats: int,
    device: torch.device,
    train_step: bool,
) -> list:
    """Rows (config, batch, what, seconds per call, images per second) for one config."""
    torch.manual_seed(0)
    generator = GENERATORS[family](z_dim=512, c_dim=0, w_dim=512, img_channels=3, **config)
    generator = generator.to(device)
    noise = noise_kwargs(generator, "const")
    discriminator = Discriminator(
        c_dim=0,
        img_channels=3,
        img_resolution=config["img_resolution"],
        channel_base=config["channel_base"],
        channel_max=config["channel_max"],
    ).to(device)
    z = torch.randn(batch, 512, device=device)

    def forward() -> None:
        with torch.no_grad():
            generator.eval()(z, None, **noise)

    def step() -> None:
        generator.train().zero_grad(set_to_none=True)
        discriminator.zero_grad(set_to_none=True)
        F.softplus(-discriminator(generator(z, None), None)).mean().backward()

    rows = []
    passes = [("G fwd", forward)] + ([("G+D fwd/bwd", step)] if train_step else [])
    for what, fn in passes:
        seconds = seconds_per_call(fn, repeats, device)
        rows.append((name, batch, what, seconds, batch / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-256", action="store_true", help="only the small config")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="these configs only")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--train-batches", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    console = Console()
    for device in devices:
        threads = torch.get_num_threads()
        table = Table(title=f"StyleGAN generators on {device} ({threads} threads)")
        for column in ("config", "batch", "pass", "s / call", "images / s"):
            table.add_column(column, justify="right")
        for name, (family, config) in CONFIGS.items():
            if (args.skip_256 and name in LARGE) or (args.only and name not in args.only):
                continue
            for batch in args.batches:
                train = name not in LARGE or batch in args.train_batches
                for row in measure(name, family, config, batch, args.repeats, device, train):
                    table.add_row(row[0], str(row[1]), row[2], f"{row[3]:.3f}", f"{row[4]:.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
