"""Cost of the ADA augmentation pipe per batch, forward and forward+backward, on this machine.

    python benchmarks/sg3_augment.py [--batch 32] [--sizes 32 64 256] [--p 0.2 0.6 1.0]
        [--repeats 5] [--device cpu|cuda] [--threads N]

Each figure is the median over --repeats calls after one warm-up call, in milliseconds per
batch; the pipe is the "bgc" preset. At p = 0 the pipe returns its input (no cost).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from src.stylegan3.augment import AugmentPipe


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds (synchronised on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--p", type=float, nargs="+", default=[0.2, 0.6, 1.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    pipe = AugmentPipe("bgc").to(device)
    table = Table(title=f"AugmentPipe bgc, batch {args.batch}, {device}, ms per batch")
    for column in ("size", "p", "forward", "forward+backward"):
        table.add_column(column, justify="right")
    for size in args.sizes:
        images = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
        for p in args.p:
            pipe.p.fill_(p)

            def forward_backward(images: torch.Tensor = images) -> None:
                x = images.detach().requires_grad_(True)
                pipe(x).sum().backward()

            with torch.no_grad():
                forward = median_ms(lambda images=images: pipe(images), args.repeats, device)
            both = median_ms(forward_backward, args.repeats, device)
            table.add_row(str(size), f"{p:g}", f"{forward:.1f}", f"{both:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
