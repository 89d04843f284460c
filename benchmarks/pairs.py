"""Pairs per second of dataset generation on CPU: one seed at a time against batched forwards.

The generators have the smoke chain's StyleGAN3-T settings (32 px, channel_base 2048,
channel_max 32, 4 layers; see configs/experiment/smoke.yaml), random weights. A "pair" is the
whole job of a seed: z, w, both images, PNG encoding and the two atomic file writes.
``per seed`` is dataset_gen's default (batch_invariant: every seed through the networks alone,
so bytes never depend on the batch); ``batched`` runs one forward per batch.

    python benchmarks/pairs.py [--pairs 64] [--batches 1 8 32] [--resolution 32] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from src.dataset_gen.pairs import PairRenderer, write_pair
from src.stylegan3.networks import Generator

SMOKE_G = {
    "z_dim": 32,
    "c_dim": 0,
    "w_dim": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 2048,
    "channel_max": 32,
    "num_layers": 4,
    "num_critical": 1,
    "margin_size": 2,
    "num_fp16_res": 0,
}


def pairs_per_second(renderer: PairRenderer, out_dir: Path, seeds: list[int], batch: int) -> float:
    """Render and write every seed's pair in batches of ``batch``; pairs per wall second."""
    renderer(seeds[:batch])
    start = time.perf_counter()
    for first in range(0, len(seeds), batch):
        chunk = seeds[first : first + batch]
        for seed, pair in zip(chunk, renderer(chunk), strict=True):
            write_pair(out_dir, seed, pair, {})
    return len(seeds) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = Generator(img_resolution=args.resolution, **SMOKE_G)
    blended = Generator(img_resolution=args.resolution, **SMOKE_G)
    blended.load_state_dict(base.state_dict())
    seeds = list(range(args.pairs))
    table = Table(
        title=f"dataset_gen pairs on CPU, {args.resolution} px, {torch.get_num_threads()} threads"
    )
    for column in ("mode", "batch", "pairs / s"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for batch_invariant, mode in ((True, "per seed"), (False, "batched")):
            renderer = PairRenderer(base, blended, psi=0.7, batch_invariant=batch_invariant)
            for batch in args.batches:
                if batch == 1 and not batch_invariant:
                    continue
                rate = pairs_per_second(renderer, Path(tmp), seeds, batch)
                table.add_row(mode, str(batch), f"{rate:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
