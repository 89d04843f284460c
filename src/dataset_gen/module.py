"""Pair generation as a Lightning predict run, so that it spreads over devices and nodes.

Rank 0 plans the run (which requested seeds still need a pair; see ``pairs.plan_pairs``) and
broadcasts the plan; Lightning's predict sampler then gives each rank its own share of those
seeds without repeats, and each rank writes its pairs and its own journal. The stage merges
the journals into ``manifest.jsonl`` after every rank has finished.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch.utils.data import DataLoader, Dataset

from src.dataset_gen.pairs import (
    JOURNAL_DIR,
    Journal,
    PairRenderer,
    plan_pairs,
    remove_partial_files,
    write_pair,
)


class SeedDataset(Dataset):
    """The seeds still to render, one item each."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> int:
        return self.seeds[index]


class PairGeneration(L.LightningModule):
    """``trainer.predict`` writes the pairs of the planned seeds; ``reused`` counts the pairs
    an earlier run had already made and verified."""

    def __init__(
        self,
        renderer: PairRenderer,
        out_dir: Path,
        seeds: list[int],
        recipe: dict[str, Any],
        batch_size: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.renderer = renderer
        self.out_dir = out_dir
        self.seeds = seeds
        self.recipe = recipe
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pending: list[int] = []
        self.reused = 0
        self.journal: Journal | None = None

    def setup(self, stage: str) -> None:
        """Plan on rank 0 (after clearing a killed run's temp files), then share the plan."""
        plan = None
        if self.trainer.is_global_zero:
            remove_partial_files(self.out_dir)
            found = plan_pairs(self.out_dir, self.seeds, self.recipe)
            plan = (found.pending, len(found.done), uuid.uuid4().hex[:12])
        self.pending, self.reused, attempt = self.trainer.strategy.broadcast(plan, src=0)
        name = f"{attempt}-rank{self.trainer.global_rank}.jsonl"
        self.journal = Journal(self.out_dir / JOURNAL_DIR / name)

    def shard_size(self) -> int:
        """How many seeds this rank renders (Lightning's unrepeated predict sampler)."""
        return len(self.pending[self.trainer.global_rank :: self.trainer.world_size])

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            SeedDataset(self.pending),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> int:
        """Render and write the batch's pairs; each row is journaled once both files exist."""
        assert self.journal is not None
        seeds = [int(seed) for seed in batch.tolist()]
        for seed, pair in zip(seeds, self.renderer(seeds), strict=True):
            self.journal.append(write_pair(self.out_dir, seed, pair, self.recipe))
        return len(seeds)

    def on_predict_end(self) -> None:
        if self.journal is not None:
            self.journal.close()


class PairsPerSecondColumn(ProgressColumn):
    """The progress's speed as pairs per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- pairs/s" if speed is None else f"{speed:.1f} pairs/s", style="cyan")


class PairProgress(Callback):
    """A rich progress bar on rank 0: pairs done of its share, pairs/s, elapsed and ETA."""

    def __init__(self, leave: bool = True) -> None:
        self.leave = leave
        self.progress: Progress | None = None
        self.task_id: Any = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, PairGeneration):
            return
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            PairsPerSecondColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=not self.leave,
        )
        where = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
        self.task_id = self.progress.add_task(f"pairs{where}", total=pl_module.shard_size())
        self.progress.start()

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id, len(batch))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
