"""Scoring throughput of the cleaner's filter on this machine, in pairs per second.

Toy pairs at --size px are scored by a randomly initialised classifier (speed does not depend
on the weights) for each backbone at its input size, decoding included, as the filter runs.

    python benchmarks/cleaner_filter.py [--pairs 256] [--size 128] [--threads N]
        [--backbones test_resnet:32 resnet18:128]

Each figure is the best of --repeats passes after one warm-up pass.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from src.cleaner.filter import read_pairs, score_pairs
from src.cleaner.model import GoodBadClassifier, ThresholdChoice, load_classifier, save_classifier
from src.common.toyfaces.writer import write_toyfaces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backbones", nargs="+", default=["test_resnet:32", "resnet18:128"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cleaner_bench_"))
    try:
        write_toyfaces(
            work / "toy",
            seed=0,
            size=args.size,
            train_count=0,
            test_count=0,
            paired_count=args.pairs,
            bad_fraction=0.2,
            contact_sheet_pairs=0,
            progress=False,
        )
        pairs = read_pairs(work / "toy" / "paired")
        table = Table(
            title=f"cleaner filter, {len(pairs)} pairs, {torch.get_num_threads()} threads"
        )
        for column in ("backbone", "input px", "pairs/s"):
            table.add_column(column)
        for spec in args.backbones:
            name, image_size = spec.split(":")
            module = GoodBadClassifier(backbone=name)
            path = work / f"{name}.pt"
            save_classifier(
                path,
                module,
                image_size=int(image_size),
                side="cartoon",
                mean=[0.5] * 3,
                std=[0.5] * 3,
                threshold=ThresholdChoice(0.5, 0.95, True),
                metrics={},
            )
            classifier = load_classifier(path)
            score_pairs(pairs, classifier, args.batch_size, progress=False)
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                score_pairs(pairs, classifier, args.batch_size, progress=False)
                best = min(best, time.perf_counter() - start)
            table.add_row(name, image_size, f"{len(pairs) / best:.0f}")
        Console().print(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
