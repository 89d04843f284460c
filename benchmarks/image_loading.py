"""Images per second for load_image, scan_images and a PairedDataModule epoch.

Generates face-sized pairs (A as PNG, B as JPEG) in a temporary folder, then times each way of
reading them. Run: ``.venv/bin/python benchmarks/image_loading.py [--pairs 200 --size 512]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from src.common.data import PairedDataModule
from src.common.images import list_images, load_image, scan_images


def synthetic_picture(size: int, seed: int) -> Image.Image:
    """Smooth colour gradients plus mild noise: compresses about like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    base = np.stack(
        [np.outer(ramp, ramp), np.outer(ramp[::-1], ramp), np.outer(ramp, ramp[::-1])], axis=-1
    )
    pixels = base * rng.uniform(120, 255, 3) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(root: Path, pairs: int, size: int) -> None:
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    for i in range(pairs):
        picture = synthetic_picture(size, seed=i)
        picture.save(root / "A" / f"{i:05d}.png")
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            root / "B" / f"{i:05d}.jpg", quality=90
        )


def rate(count: int, run: Callable[[], object]) -> float:
    """Items per second of ``run``, which handles ``count`` items."""
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=200, help="pairs to generate (2 files each)")
    parser.add_argument("--size", type=int, default=512, help="side of the generated pictures")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, args.pairs, args.size)
        paths = list_images(root / "A") + list_images(root / "B")
        print(f"{len(paths)} files of {args.size}x{args.size} (half PNG, half JPEG)")

        def load_all() -> None:
            for path in paths:
                load_image(path)

        print(f"load_image, one thread:   {rate(len(paths), load_all):7.1f} images/s")
        for workers in (1, 2):
            speed = rate(
                len(paths), lambda w=workers: scan_images(paths, workers=w, progress=False)
            )
            print(f"scan_images, {workers} worker(s): {speed:7.1f} images/s")

        for workers in sorted({0, args.loader_workers}):
            module = PairedDataModule(
                root=str(root),
                load_size=143,
                crop_size=128,
                batch_size=8,
                num_workers=workers,
                val_fraction=0.0,
                validate=False,
            )
            module.setup()
            loader = module.train_dataloader()
            batches = len(loader)
            speed = rate(batches * 8, lambda loader=loader: sum(1 for _ in loader))
            print(
                f"PairedDataModule epoch at 128 px, {workers} loader worker(s): "
                f"{speed:7.1f} pairs/s ({batches} batches of 8, first epoch incl. worker start)"
            )


if __name__ == "__main__":
    main()
