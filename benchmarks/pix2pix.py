"""pix2pix on CPU: training iterations/s and inference images/s for unet_256 at 256 px.

Rows at batch 1 and 4: a full training iteration (G forward, D step on real and fake pairs,
G step on GAN + 100 L1, as in ``Pix2PixModule.training_step``), and generator inference with
PyTorch eager (NCHW), eager channels-last, and ONNX Runtime (CPU provider) on the graph
``src.common.export.export_onnx`` writes. Timings are medians after one warm-up.

    python benchmarks/pix2pix.py [--repeats 3] [--batches 1 4] [--size 256] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from src.common.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from src.pix2pix.model import gan_loss
from src.pix2pix.networks import build_discriminator, build_generator, init_weights


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_iteration(net_g: str, batch: int, size: int) -> Callable[[], None]:
    """One pix2pix iteration (D then G, Adam) on random pairs, batch norm as in the paper."""
    generator = init_weights(build_generator({"netG": net_g}))
    discriminator = init_weights(build_discriminator(input_nc=6))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_a = torch.rand(batch, 3, size, size) * 2 - 1
    real_b = torch.rand(batch, 3, size, size) * 2 - 1

    def step() -> None:
        fake_b = generator(real_a)
        discriminator.requires_grad_(True)
        pred_fake = discriminator(torch.cat([real_a, fake_b.detach()], 1))
        pred_real = discriminator(torch.cat([real_a, real_b], 1))
        loss_d = 0.5 * (
            gan_loss(pred_fake, False, "vanilla", for_d=True)
            + gan_loss(pred_real, True, "vanilla", for_d=True)
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        pred = discriminator(torch.cat([real_a, fake_b], 1))
        loss_g = gan_loss(pred, True, "vanilla", for_d=False) + 100 * (fake_b - real_b).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--net", default="unet_256")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime as ort

    torch.manual_seed(0)
    generator = init_weights(build_generator({"netG": args.net})).eval()
    channels_last = init_weights(build_generator({"netG": args.net})).eval()
    channels_last.load_state_dict(generator.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        graph = export_onnx(generator, torch.zeros(1, 3, args.size, args.size), Path(tmp) / "g")
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    table = Table(
        title=f"pix2pix {args.net} at {args.size} px on CPU ({torch.get_num_threads()} threads)"
    )
    for column in ("what", "batch", "s / call", "rate"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for batch in args.batches:
        images = torch.rand(batch, 3, args.size, args.size) * 2 - 1
        seconds = median_seconds(training_iteration(args.net, batch, args.size), args.repeats)
        table.add_row(
            "train iteration (D+G)", str(batch), f"{seconds:.3f}", f"{1 / seconds:.2f} it/s"
        )
        with torch.inference_mode():
            rows = {
                "inference eager": lambda images=images: generator(images),
                "inference channels-last": lambda images=images: channels_last(
                    images.to(memory_format=torch.channels_last)
                ),
            }
            for name, fn in rows.items():
                seconds = median_seconds(fn, args.repeats)
                table.add_row(name, str(batch), f"{seconds:.3f}", f"{batch / seconds:.2f} img/s")
        feed = {INPUT_NAME: images.numpy()}
        seconds = median_seconds(lambda feed=feed: session.run([OUTPUT_NAME], feed), args.repeats)
        table.add_row(
            "inference ONNX Runtime", str(batch), f"{seconds:.3f}", f"{batch / seconds:.2f} img/s"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
