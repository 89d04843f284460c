"""Progress displays that say where a run is of its total, for epoch- and iteration-based stages.

Lightning's rich bar reads ``Epoch 0/-2 ... 400/--`` for stages that count iterations or kimg
(``max_epochs=-1``). :class:`StageProgressBar` (the rich bar of ``configs/callbacks``) shows
``it 400/1000`` or, for StyleGAN, ``kimg 3.2/25000`` there, one bar for the whole run.

Under nohup, submitit or SLURM, stdout is a file: the rich progress bar writes nothing there
for hours. :class:`PlainProgressBar` prints a line every ``every_s`` seconds and at each epoch's
end, as NVIDIA's train.py does: the stage, where it is of the total (epochs and steps, or
iterations / kimg), the rate and time left, the progress-bar metrics (losses, sec/kimg, ...)
and peak GPU memory. :func:`progress_for_output` swaps it in when stdout is not a terminal.

Where a run is: a module's ``progress_position()`` when it has one (StyleGAN3 counts kimg),
else, for ``max_steps`` runs without an epoch limit, iterations from ``global_step`` (one step
per optimizer per iteration, as the manual-optimisation GAN stages step).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar


@dataclass(frozen=True)
class TrainingPosition:
    """``done`` of ``total`` iterations of an iteration-based run, and how to say where it is
    (``label``: ``it 5/20``, ``kimg 0.3/1.6``)."""

    done: int
    total: int
    label: str


def training_position(trainer: L.Trainer, module: Any) -> TrainingPosition | None:
    """Where an iteration-based run is (see the module docstring); None for epoch-based runs."""
    own = getattr(module, "progress_position", None)
    if callable(own):
        return own()
    unlimited_epochs = trainer.max_epochs is None or trainer.max_epochs < 0
    if trainer.max_steps is None or trainer.max_steps <= 0 or not unlimited_epochs:
        return None
    per_iteration = max(1, len(trainer.optimizers))
    done, total = trainer.global_step // per_iteration, trainer.max_steps // per_iteration
    return TrainingPosition(done, total, f"it {done:,}/{total:,}")


class StageProgressBar(RichProgressBar):
    """Lightning's rich bar; for iteration-based runs one bar of iterations out of the total,
    described by :func:`training_position` (``it 5/20``, ``kimg 0.3/1.6``), instead of a bar per
    pass over the data headed ``Epoch N/-2``."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        position = training_position(trainer, pl_module)
        if position is None:
            super().on_train_epoch_start(trainer, pl_module)
        else:
            self._show(position)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        position = training_position(trainer, pl_module)
        if position is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        self._show(position)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _show(self, position: TrainingPosition) -> None:
        """Create the run's one train bar, or move it to ``position``."""
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(position.total, position.label)
        styled = f"[{self.theme.description}]{position.label}"
        self.progress.update(
            self.train_progress_bar_id,
            completed=position.done,
            total=position.total,
            description=styled if self.theme.description else position.label,
            visible=True,
        )
        self.refresh()


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
        self._start_position = 0
        self._batch = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step
        position = training_position(trainer, pl_module)
        self._start_position = 0 if position is None else position.done

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
        parts = [f"[{self.name}]"] if self.name else []
        position = training_position(trainer, pl_module)
        if position is None:
            current, total, start, unit = (
                trainer.global_step,
                trainer.max_steps,
                self._start_step,
                "steps",
            )
            if trainer.max_epochs is not None and trainer.max_epochs > 0:
                epochs = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                batches = self.total_train_batches
                known = isinstance(batches, int) and batches > 0
                parts.append(f"{epochs} batch {self._batch}/{batches}" if known else epochs)
            parts.append(f"step {current:,}" + (f"/{total:,}" if total > 0 else ""))
        else:
            current, total, start, unit = position.done, position.total, self._start_position, "it"
            parts.append(position.label)
        elapsed = time.monotonic() - self._start
        done = current - start
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {unit}/s")
            if total > 0:
                parts.append(f"eta {timedelta(seconds=round(max(total - current, 0) / rate))}")
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
