"""Seconds per kimg of StyleGAN3 training on this machine, for the smoke chain's config.

Composes ``stylegan3_photo`` with ``+experiment=smoke`` (the tiny 32 px T network, batch 8),
renders the smoke chain's toy photos into a temporary folder and times training steps in
this process (a full step: G step, D step, lazy R1 every 16th, EMA, ADA). The first steps
(warm-up) are not counted. Numbers on a busy machine are noisy: run it on an idle one.

    python benchmarks/sg3_train.py [--steps 60] [--warmup 10] [--threads 2] [--aug ada]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table

from src.common.stage import CONFIG_DIR
from src.common.toyfaces.writer import write_toyfaces
from src.stylegan3.__main__ import training_options
from src.stylegan3.training import StyleGAN3Training


class StepTimer(L.Callback):
    """Wall time of every training step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aug", default=None, help="override the smoke config's aug")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="sg3_train"),
    ):
        cfg = compose("stylegan3_photo", overrides=["+experiment=smoke", f"paths.root_dir={tmp}"])
        smoke = cfg.toyfaces
        toy = Path(tmp) / "toyfaces"
        write_toyfaces(
            toy,
            seed=0,
            size=int(smoke.size),
            train_count=int(smoke.train_count),
            test_count=1,
            paired_count=1,
            bad_fraction=0,
            progress=False,
        )
        params = cfg.stylegan3_photo
        params.data = str(toy / "trainA")
        if args.aug:
            params.aug = args.aug
        options = training_options(params, seed=0)
        options.kimg = (args.steps + args.warmup) * options.batch / 1000
        torch.manual_seed(0)
        module = StyleGAN3Training(options)
        timer = StepTimer()
        module.extra_callbacks = [timer]
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=-1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(module)

    steps = timer.times[args.warmup :]
    per_step = statistics.median(steps)
    sec_per_kimg = per_step / options.batch * 1000
    table = Table(title="StyleGAN3 training, smoke config (CPU)")
    for column in ("config", "batch", "aug", "threads", "steps", "s/step", "sec/kimg", "img/s"):
        table.add_column(column, justify="right")
    table.add_row(
        f"T {options.resolution}px c{options.G_kwargs['channel_max']}",
        str(options.batch),
        options.aug,
        str(args.threads),
        str(len(steps)),
        f"{per_step:.3f}",
        f"{sec_per_kimg:.1f}",
        f"{options.batch / per_step:.1f}",
    )
    Console().print(table)
    for stage in ("stylegan3_photo", "stylegan3"):
        kimg = float(cfg[stage].kimg)
        print(f"smoke {stage}: {kimg} kimg = about {kimg * sec_per_kimg:.0f} s of training steps")


if __name__ == "__main__":
    main()
