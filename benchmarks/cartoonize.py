"""Per-photo latency of cartoonize on this machine: detect, align, generate, paste, total.

For the shipped one-face (astronaut.jpg) and two-face (two_faces.jpg) test photos, with the
generator run by PyTorch and by ONNX Runtime. Without --model, a randomly initialised pix2pix
U-Net at the release's size (unet_256, ngf 64) stands in: latency does not depend on weights.

    python benchmarks/cartoonize.py [--model generator.pt] [--repeats 5] [--threads N]
        [--inversion] [--restyle-steps 1,5] [--project-steps N] [--detector auto|dlib|haar]

With --inversion, also ``backend=inversion`` (Toonify by inversion, degree 0.5): a random
ReStyle-e4e IR-SE50 encoder at the release's size (256 px, 16 styles) and a random StyleGAN3-T
at 256 px (toonify_t256's channels) as base and blend, for each ReStyle step count; with
--project-steps N > 0, one more row: the first ReStyle count followed by N projection steps
(``inversion.project_steps``, MSE only).

Each figure is the median over --repeats calls after one warm-up call; the ONNX export happens
before timing.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from src.common.generators import save_generator
from src.encoder.toonify import InversionRunner
from src.faces import make_detector
from src.serve.engine import STEPS, Cartoonizer, load_runner

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
CASES = {"1 face": "astronaut.jpg", "2 faces": "two_faces.jpg"}


def stand_in_generator(folder: Path) -> Path:
    """A random pix2pix unet_256 exported as generator.pt (the release's default size)."""
    from src.pix2pix.networks import build_generator, generator_config

    config = generator_config(netG="unet_256", ngf=64)
    torch.manual_seed(0)
    return save_generator(
        folder / "generator.pt",
        build_generator(config),
        family="pix2pix",
        config=config,
        image_size=256,
    )


def stand_in_inversion(steps: int, project_steps: int = 0) -> InversionRunner:
    """A random ReStyle-e4e IR-SE50 encoder and StyleGAN3-T 256 base and blend, degree 0.5,
    with ``project_steps`` projection steps after the encoder."""
    from src.encoder.checkpoints import EncoderBundle
    from src.encoder.inversion import DegreeBlend, Inverter
    from src.encoder.networks import build_encoder
    from src.encoder.toonify import load_refiner
    from src.stylegan3.networks import Generator

    torch.manual_seed(0)
    kwargs = {"channel_base": 16384, "channel_max": 512, "num_fp16_res": 0}
    base = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, **kwargs)
    blended = copy.deepcopy(base)
    with torch.no_grad():
        for param in blended.synthesis.parameters():
            param.add_(0.01 * torch.randn_like(param))
    encoder = build_encoder({"kind": "restyle_e4e", "n_styles": base.num_ws}).eval()
    bundle = EncoderBundle(encoder, base.mapping.w_avg.repeat(base.num_ws, 1), {}, "stand-in")
    inverter = Inverter(bundle, base.eval(), steps=steps)
    refiner = load_refiner({}, project_steps, base)
    return InversionRunner(inverter, DegreeBlend(base, blended), degree=0.5, refiner=refiner)


def time_case(engine: Cartoonizer, photo: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds of each step and of the whole call, after a warm-up call."""
    engine(photo, paste_back=True)
    runs = [engine(photo, paste_back=True).seconds for _ in range(repeats)]
    medians = {step: statistics.median(run[step] for run in runs) for step in STEPS}
    medians["total"] = statistics.median(sum(run.values()) for run in runs)
    return medians


def main() -> None:
    """Parse the options, time every runtime and photo, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="generator.pt to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--inversion", action="store_true", help="also time backend=inversion")
    parser.add_argument("--restyle-steps", default="1,5", help="ReStyle step counts to time")
    parser.add_argument(
        "--project-steps", type=int, default=0, help="projection steps after the encoder"
    )
    parser.add_argument("--detector", default="auto", help="auto, dlib or haar")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    table = Table(
        title=f"cartoonize latency per photo, ms (CPU, {torch.get_num_threads()} threads)"
    )
    for column in ("backend", "photo", "faces", *STEPS, "total"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or stand_in_generator(Path(tmp))
        detector = make_detector(args.detector)
        runners: dict[str, Any] = {
            runtime: load_runner(model, runtime, onnx_dir=tmp, threads=args.threads)
            for runtime in ("torch", "onnx")
        }
        if args.inversion:
            counts = [int(s) for s in args.restyle_steps.split(",")]
            for steps in counts:
                runners[f"inversion, {steps} step(s)"] = stand_in_inversion(steps)
            if args.project_steps > 0:
                label = f"inversion, {counts[0]} step(s) + {args.project_steps} projection"
                runners[label] = stand_in_inversion(counts[0], args.project_steps)
        for backend, runner in runners.items():
            engine = Cartoonizer(runner, detector)
            for label, name in CASES.items():
                photo = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
                faces = len(engine(photo).cartoons)
                medians = time_case(engine, photo, args.repeats)
                cells = [f"{1000 * medians[k]:.1f}" for k in (*STEPS, "total")]
                table.add_row(backend, label, str(faces), *cells)
    console.print(table)


if __name__ == "__main__":
    main()
