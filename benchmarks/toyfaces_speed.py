"""Toy-face throughput on one CPU core: images a minute, PNG writing included.

    .venv/bin/python benchmarks/toyfaces_speed.py [--faces 100] [--sizes 64 128 256] [--dir D]

For each size it writes ``--faces`` unpaired photos, as many unpaired cartoons and as many paired
faces (photo + cartoon, 20% with a defect) with ``write_toyfaces(workers=1)``, so every image
counts once, and prints the rate. The process is pinned to one core where the OS allows it.
The dataset goes to a temporary folder under ``--dir`` (default: the system's temporary folder):
creating files is part of the cost, and it differs a lot between file systems.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.common.toyfaces import write_toyfaces


def pin_to_one_core() -> str:
    """Restrict this process to a single CPU; say which one (or why not)."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this OS)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to CPU {core}"


def images_per_minute(size: int, faces: int, parent: str | None) -> tuple[int, float]:
    """Write one dataset of ``faces`` per set at ``size``; return (images, images a minute)."""
    with tempfile.TemporaryDirectory(dir=parent) as out_dir:
        start = time.perf_counter()
        write_toyfaces(
            out_dir,
            seed=0,
            size=size,
            train_count=faces,
            test_count=0,
            paired_count=faces,
            bad_fraction=0.2,
            contact_sheet_pairs=0,
            workers=1,
            progress=False,
        )
        elapsed = time.perf_counter() - start
    images = 4 * faces
    return images, images / elapsed * 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100, help="faces per set (default 100)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dir", default=None, help="parent of the temporary output folder")
    args = parser.parse_args()
    print(pin_to_one_core())
    for size in args.sizes:
        images, rate = images_per_minute(size, args.faces, args.dir)
        print(f"size {size:3d}: {images} images, {rate:8.0f} images/minute")


if __name__ == "__main__":
    main()
