"""``python -m tests.stylegan3.ddp_consistency OUT [BATCH_GPU]``: a tiny 2-process CPU DDP fit in
which every rank saves its G, D and G_ema state to ``OUT/rank{N}.pt`` at the end, to compare the
ranks (with BATCH_GPU, each rank's 4 images go in passes of that many, accumulated)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from tests.stylegan3.training_helpers import build, fit, tiny_options, write_images


class SaveEveryRank(L.Callback):
    """Each rank's networks at the end of training, to ``folder/rank{global_rank}.pt``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        state = {
            f"{name}.{key}": value.detach().clone()
            for name in ("G", "D", "G_ema")
            for key, value in getattr(module, name).state_dict().items()
        }
        torch.save(state, self.folder / f"rank{trainer.global_rank}.pt")


def main(out: Path, batch_gpu: int | None = None) -> None:
    data = write_images(out / "data", count=16)
    # 5 steps of 8 images (4 a rank), R1 every 4th step: G, D and R1 backwards all synchronise.
    options = tiny_options(data, kimg=0.040, batch=8, batch_gpu=batch_gpu, r1_interval=4, gamma=1.0)
    fit(
        build(options),
        out / "run",
        callbacks=[SaveEveryRank(out)],
        devices=2,
        strategy="ddp_find_unused_parameters_true",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
