"""Build a Lightning Trainer from the shared config groups and a stage's own loop settings."""

from __future__ import annotations

import logging
import os
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.lifecycle import GUARD, is_secondary_rank
from src.common.progress import progress_for_output
from src.common.stage import StageContext

LAST_CHECKPOINT = "last.ckpt"


class CheckpointOnSigterm(L.Callback):
    """On SIGTERM, stop at the end of the batch and save ``checkpoints/last.ckpt``.

    While ``fit`` runs, the stage's SIGTERM handler only takes note (:data:`GUARD` is deferred)
    and Lightning raises its ``SIGTERMException`` after the batch; this callback then saves a
    checkpoint the next run resumes from (atomically: a temporary file renamed into place), and
    the stage exits with 143 (``src.common.stage.run_stage``).
    """

    def __init__(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self._deferring = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self._deferring:
            GUARD.defer()
            self._deferring = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Another stop signal (submitit's USR2 under SLURM) reached the guard: turn it into the
        # SIGTERM Lightning stops on, at the end of this batch.
        if GUARD.received and not trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._deferring:
            GUARD.undefer()
            self._deferring = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not (GUARD.received or trainer.received_sigterm):
            return
        path = self.checkpoint_dir / LAST_CHECKPOINT
        tmp = path.with_name(f".{path.name}.sigterm.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``logger`` or ``callbacks`` group (a dict of configs)."""
    if not node:
        return []
    return [instantiate(conf) for conf in node.values() if conf and "_target_" in conf]


def log_lightning_once() -> None:
    """Drop the ``lightning`` package's own console handler when the root logger has handlers.

    ``import lightning`` adds a console handler to its logger, whose records also propagate to
    the root logger. A stage imports Lightning after Hydra has configured the root logger (the
    console and the job's log file), so every Lightning line was printed twice.
    """
    if not logging.getLogger().handlers:
        return
    package_logger = logging.getLogger("lightning")
    for handler in list(package_logger.handlers):
        if type(handler) is logging.StreamHandler:
            package_logger.removeHandler(handler)


def make_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` with ``cfg.<stage>.trainer`` and ``overrides`` on top.

    The shared group says where to run (cpu, gpu, ddp); the stage says how long (max_epochs,
    max_steps, ...). Loggers and callbacks come from the ``logger`` and ``callbacks`` groups;
    when stdout is not a terminal the progress bar prints plain status lines instead.
    """
    log_lightning_once()
    stage_trainer = OmegaConf.select(cfg, f"{cfg.stage}.trainer", default=None)
    merged = {
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        **(OmegaConf.to_container(stage_trainer, resolve=True) if stage_trainer else {}),
        **overrides,
    }
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks.append(CheckpointOnSigterm(Path(cfg.out_dir) / "checkpoints"))
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:
        # LearningRateMonitor refuses to start without a logger (logger=none): nothing to log.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(
        merged,
        logger=loggers or False,
        callbacks=progress_for_output(callbacks, str(cfg.stage)),
    )


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint to resume from (truncated, corrupt), or None.

    Checked without unpickling: a torch file is a zip archive whose members' CRCs must hold.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"truncated or not a checkpoint ({err})"
    return None if bad is None else f"corrupt member {bad}"


def intact_checkpoint(wanted: Path, stage: str = "resume") -> Path | None:
    """``wanted`` if intact; else the newest intact ``*.ckpt`` beside it, saying so; else None."""
    problem = checkpoint_problem(wanted)
    if problem is None:
        return wanted
    candidates = sorted(
        (p for p in wanted.parent.glob("*.ckpt") if p != wanted and p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    fallback = next((p for p in candidates if checkpoint_problem(p) is None), None)
    then = f"resuming from {fallback.name} instead" if fallback else "none intact beside it"
    print(f"{stage}: {wanted} is broken: {problem}; {then}", file=sys.stderr)
    return fallback


def last_checkpoint(out_dir: str | Path, stage: str = "resume") -> Path | None:
    """``<out_dir>/checkpoints/last.ckpt`` when an earlier run left one, for exact resume; when it
    is truncated or corrupt, the newest intact checkpoint beside it (with a message)."""
    path = Path(out_dir) / "checkpoints" / LAST_CHECKPOINT
    return intact_checkpoint(path, stage) if path.is_file() else None


def resume_checkpoint(ctx: StageContext) -> Path | None:
    """The Lightning checkpoint a training stage continues from: ``ckpt_path`` (``last`` or a
    file), or the stage's own ``last.ckpt`` when an interrupted attempt of this config left one."""
    wanted = ctx.params.get("ckpt_path")
    if wanted == "last":
        found = last_checkpoint(ctx.out_dir, ctx.stage)
        if found is None:
            raise UserError(
                f"ckpt_path=last: {ctx.out_dir}/checkpoints/last.ckpt does not exist or is "
                "broken, with no intact checkpoint beside it; set ckpt_path=null to start over"
            )
        return found
    if wanted:
        if not Path(wanted).is_file():
            raise UserError(f"ckpt_path: {wanted} does not exist; fix the path or use last")
        problem = checkpoint_problem(Path(wanted))
        if problem:
            raise UserError(f"ckpt_path: {wanted} is {problem}; choose another checkpoint")
        return Path(wanted)
    return last_checkpoint(ctx.out_dir, ctx.stage) if ctx.resume else None


def rank_shared_resume_checkpoint(ctx: StageContext) -> Path | None:
    """:func:`resume_checkpoint` as rank 0 decides it, for every DDP process.

    The processes Lightning starts for the other ranks run the stage again after rank 0 wrote its
    ``started.json``, so on their own they would take a fresh run for a resumed one; rank 0 passes
    its choice down in the environment they inherit.
    """
    variable = f"TOONFORGE_{ctx.stage.upper()}_RESUME"
    if is_secondary_rank() and variable in os.environ:
        chosen = os.environ[variable]
        return Path(chosen) if chosen else None
    found = resume_checkpoint(ctx)
    os.environ[variable] = str(found or "")
    return found
