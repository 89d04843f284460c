"""ONNX export error per generator family at release size (256 px), old check against new.

For each family a freshly initialised generator (batch norm with running statistics from a few
training-mode batches, so eval mode is not trivial) is exported at 256 px and run in ONNX
Runtime. Columns: the old check (max abs diff ONNX Runtime vs float32 PyTorch on two uniform
random images, against the fixed 1e-4 limit), then the new one on toy-face photos and noise:
ONNX Runtime's and float32 PyTorch's max abs error against a float64 PyTorch forward, the limit
(FACTOR x PyTorch's own, at least FLOOR) and the verdict. Export time is in seconds.

    python benchmarks/export_parity.py [--size 256] [--families unet_256 ugatit photo2cartoon ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from src.common.export import (
    FACTOR,
    check_images,
    check_onnx,
    export_onnx,
    onnx_max_abs_diff,
)
from src.cyclegan.networks import build_generator as build_cyclegan
from src.photo2cartoon.networks import Generator
from src.pix2pix.networks import build_generator as build_pix2pix
from src.pix2pix.networks import init_weights

OLD_LIMIT = 1e-4


def generator(family: str, size: int) -> torch.nn.Module:
    """A release-size generator of ``family`` with seeded weights, in eval mode."""
    torch.manual_seed(0)
    if family == "unet_256":
        net = init_weights(build_pix2pix({"netG": "unet_256"}))
        with torch.no_grad():
            net.train()(torch.rand(2, 3, 256, 256) * 2 - 1)
        return net.eval()
    if family == "resnet_9blocks":
        return init_weights(build_cyclegan({"netG": "resnet_9blocks"})).eval()
    light = family.endswith("light")
    kind = family.removesuffix("_light").removesuffix("_full")
    ngf = 32 if kind == "photo2cartoon" else 64
    return Generator(kind, ngf=ngf, img_size=size, light=light, n_res=4).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--families",
        nargs="+",
        default=["unet_256", "resnet_9blocks", "ugatit_light", "photo2cartoon_light"],
    )
    args = parser.parse_args()
    table = Table(title=f"ONNX export at {args.size} px: error against the old and new checks")
    for column in (
        "family",
        "old: |ORT - torch|",
        "old verdict",
        "new: |ORT - f64|",
        "|torch - f64|",
        "limit",
        "new verdict",
        "export s",
    ):
        table.add_column(column)
    for family in args.families:
        net = generator(family, args.size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "g.onnx"
            start = time.perf_counter()
            export_onnx(net, torch.zeros(1, 3, args.size, args.size), path)
            seconds = time.perf_counter() - start
            torch.manual_seed(1)
            old = onnx_max_abs_diff(net, path, torch.rand(2, 3, args.size, args.size) * 2 - 1)
            report = check_onnx(net, path, check_images(args.size))
        table.add_row(
            family,
            f"{old:.2e}",
            "pass" if old <= OLD_LIMIT else "FAIL",
            f"{report.onnx_error:.2e}",
            f"{report.torch_error:.2e}",
            f"{report.allowed:.2e} ({FACTOR:g}x)",
            "pass" if report.passed else "FAIL",
            f"{seconds:.1f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
