"""A progress display for logs: one plain status line at a time, for output that is not a terminal.

Under nohup, submitit or SLURM, stdout is a file: the rich progress bar writes nothing there
for hours (and its header reads ``Epoch 0/-2 ... 400/--`` for iteration-based stages).
:class:`PlainProgressBar` prints a line every ``every_s`` seconds and at each epoch's end, as
NVIDIA's train.py does: the stage, where it is of the total (epochs and steps, or steps alone),
the rate and time left, the progress-bar metrics (losses, kimg, sec/kimg, ...) and peak GPU
memory. :func:`progress_for_output` swaps it in when stdout is not a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar


def _value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class PlainProgressBar(ProgressBar):
    """Status lines instead of a live bar (see the module docstring)."""

    def __init__(self, every_s: float = 60.0, name: str = "") -> None:
        super().__init__()
        self.every_s = every_s
        self.name = name
        self._enabled = True
        self._last = 0.0
        self._start = 0.0
        self._start_step = 0
        self._batch = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batch = batch_idx + 1
        if time.monotonic() - self._last >= self.every_s:
            self.print_status(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.print_status(trainer, pl_module)

    def status_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """Where training is, how fast it goes and its latest metrics, in one line."""
        step, max_steps = trainer.global_step, trainer.max_steps
        parts = [f"[{self.name}]"] if self.name else []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            epochs = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            batches = self.total_train_batches
            known = isinstance(batches, int) and batches > 0
            parts.append(f"{epochs} batch {self._batch}/{batches}" if known else epochs)
        parts.append(f"step {step:,}" + (f"/{max_steps:,}" if max_steps > 0 else ""))
        elapsed = time.monotonic() - self._start
        done = step - self._start_step
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} steps/s")
            if max_steps > 0:
                parts.append(f"eta {timedelta(seconds=round((max_steps - step) / rate))}")
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        parts += [f"{key} {_value(value)}" for key, value in metrics.items()]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GB")
        return "  ".join(parts)

    def print_status(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.monotonic()
        if self._enabled and trainer.is_global_zero:
            print(self.status_line(trainer, pl_module), flush=True)


def progress_for_output(
    callbacks: Sequence[Callback], name: str, interactive: bool | None = None
) -> list[Callback]:
    """``callbacks`` with any progress bar made a :class:`PlainProgressBar` when not interactive.

    ``interactive`` defaults to whether stdout is a terminal.
    """
    if interactive is None:
        interactive = sys.stdout.isatty()
    if interactive:
        return list(callbacks)
    return [PlainProgressBar(name=name) if isinstance(c, ProgressBar) else c for c in callbacks]
