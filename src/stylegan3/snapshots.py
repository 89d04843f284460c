"""Every ``snap`` kimg: a fixed-seed image grid, optional FID/KID, and atomic checkpoints.

``checkpoints/last.ckpt`` is always the newest snapshot (``ckpt_path=last`` resumes from it)
and ``checkpoints/best.ckpt`` the one with the lowest FID when metrics are on. Both are written
to a temporary name and renamed, so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from src.common import tags
from src.common.visual import log_image_grid

MetricsFn = Callable[[Any], dict[str, float]]


def save_checkpoint_atomic(trainer: L.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file, renamed onto ``path`` by rank 0.

    Every rank must call it (Lightning gathers state from all of them)."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("stylegan3-checkpoint")


class Snapshots(L.Callback):
    """Grids, metrics and checkpoints at every ``snap_kimg`` and when training ends."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        snap_kimg: float,
        metrics_fn: MetricsFn | None = None,
        grid_columns: int = 8,
    ) -> None:
        self.checkpoint_dir = Path(out_dir) / "checkpoints"
        self.grid_dir = Path(out_dir) / "grids"
        self.snap_nimg = max(int(snap_kimg * 1000), 1)
        self.metrics_fn = metrics_fn
        self.grid_columns = grid_columns
        self.next_snap = self.snap_nimg

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self.next_snap = (module.cur_nimg // self.snap_nimg + 1) * self.snap_nimg
        if module.cur_nimg == 0 and trainer.is_global_zero:
            reals = torch.stack([module.dataset[i] for i in range(min(len(module.dataset), 32))])
            log_image_grid(
                trainer.logger,
                tags.samples("reals"),
                reals,
                0,
                self.grid_dir,
                nrow=self.grid_columns,
            )
            self._log_grid(trainer, module)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if module.cur_nimg >= self.next_snap or module.done:
            self.snapshot(trainer, module)
            self.next_snap = (module.cur_nimg // self.snap_nimg + 1) * self.snap_nimg

    def _log_grid(self, trainer: L.Trainer, module: Any) -> None:
        log_image_grid(
            trainer.logger,
            tags.samples("fakes"),
            module.sample_grid(),
            module.cur_nimg,
            self.grid_dir,
            nrow=self.grid_columns,
        )

    def snapshot(self, trainer: L.Trainer, module: Any) -> None:
        """Grid and metrics (rank 0), then last.ckpt and, on a new best FID, best.ckpt."""
        improved = False
        if trainer.is_global_zero:
            self._log_grid(trainer, module)
            if self.metrics_fn is not None:
                module.last_metrics = self.metrics_fn(module)
                fid = module.last_metrics.get("fid")
                improved = fid is not None and fid < module.best_fid
                if improved:
                    module.best_fid = fid
                self._log_metrics(trainer, module)
        improved = trainer.strategy.broadcast(improved, src=0)
        save_checkpoint_atomic(trainer, self.checkpoint_dir / "last.ckpt")
        if improved:
            save_checkpoint_atomic(trainer, self.checkpoint_dir / "best.ckpt")

    @staticmethod
    def _log_metrics(trainer: L.Trainer, module: Any) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(
                {tags.metric(k): v for k, v in module.last_metrics.items()}, step=module.cur_nimg
            )
