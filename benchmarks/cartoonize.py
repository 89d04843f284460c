"""Per-photo latency of cartoonize on this machine: detect, align, generate, paste, total.

For the shipped one-face (astronaut.jpg) and two-face (two_faces.jpg) test photos, with the
generator run by PyTorch and by ONNX Runtime. Without --model, a randomly initialised pix2pix
U-Net at the release's size (unet_256, ngf 64) stands in: latency does not depend on weights.

    python benchmarks/cartoonize.py [--model generator.pt] [--repeats 5] [--threads N]
        [--detector auto|dlib|haar]

Each figure is the median over --repeats calls after one warm-up call; the ONNX export happens
before timing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from src.common.generators import save_generator
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
    parser.add_argument("--detector", default="auto", help="auto, dlib or haar")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    table = Table(
        title=f"cartoonize latency per photo, ms (CPU, {torch.get_num_threads()} threads)"
    )
    for column in ("runtime", "photo", "faces", *STEPS, "total"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or stand_in_generator(Path(tmp))
        detector = make_detector(args.detector)
        for runtime in ("torch", "onnx"):
            runner = load_runner(model, runtime, onnx_dir=tmp, threads=args.threads)
            engine = Cartoonizer(runner, detector)
            for label, name in CASES.items():
                photo = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
                faces = len(engine(photo).cartoons)
                medians = time_case(engine, photo, args.repeats)
                cells = [f"{1000 * medians[k]:.1f}" for k in (*STEPS, "total")]
                table.add_row(runtime, label, str(faces), *cells)
    console.print(table)


if __name__ == "__main__":
    main()
