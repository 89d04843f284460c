"""Training iterations per second of the light photo2cartoon model on CPU at 256 px.

One iteration is what the stage runs per batch: the four critics' step on detached
translations, then the generators' step (six generator passes, LSGAN, cycle, identity and CAM
losses; the face-ID loss is left out, as it needs downloaded weights) and the clippers.
Defaults are the released model's: ngf 32, ndf 32, 4 residual blocks, critics of 7 and 5 layers,
batch 1. Also prints the A->B generator's inference images per second.

    python benchmarks/photo2cartoon.py [--size 256] [--iterations 3] [--threads N] [--model ugatit]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from src.photo2cartoon.networks import count_parameters
from src.photo2cartoon.training import DEFAULT_NGF, Photo2CartoonTraining


class RandomImages(Dataset):
    """Endless random (A, B) pairs of one size."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count = size, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shape = (3, self.size, self.size)
        return {"A": torch.rand(shape) * 2 - 1, "B": torch.rand(shape) * 2 - 1}


class IterationTimer(L.Callback):
    """Wall time of each training iteration (batch start to batch end)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: object) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=3, help="timed, after one warm-up")
    parser.add_argument("--model", default="photo2cartoon", choices=["photo2cartoon", "ugatit"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    ngf = DEFAULT_NGF[args.model]
    module = Photo2CartoonTraining(
        generator={"kind": args.model, "ngf": ngf, "img_size": args.size, "light": True},
        ndf=ngf,
        weights={"faceid": 0.0},
        sample_every=0,
        iterations=1_000_000,
    )
    timer = IterationTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2 * (args.iterations + 1),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    loader = DataLoader(RandomImages(args.size, args.iterations + 1), batch_size=1)
    trainer.fit(module, train_dataloaders=loader)
    timed = sorted(timer.times[1:])
    train_seconds = timed[len(timed) // 2]

    generator = module.gen_a2b.eval()
    image = torch.rand(1, 3, args.size, args.size) * 2 - 1
    with torch.no_grad():
        generator(image)
        start = time.perf_counter()
        for _ in range(args.iterations):
            generator(image)
        infer_seconds = (time.perf_counter() - start) / args.iterations

    table = Table(title=f"{args.model} light on CPU ({torch.get_num_threads()} threads)")
    for column in ("size", "G params", "what", "s / call", "per second"):
        table.add_column(column, justify="right")
    params = f"{count_parameters(generator):,}"
    table.add_row(
        str(args.size),
        params,
        "train iteration",
        f"{train_seconds:.2f}",
        f"{1 / train_seconds:.3f}",
    )
    table.add_row(
        str(args.size), params, "A->B inference", f"{infer_seconds:.3f}", f"{1 / infer_seconds:.2f}"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
