"""Build a Lightning Trainer from the shared config groups and a stage's own loop settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.progress import progress_for_output
from src.common.stage import StageContext


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
    return instantiate(
        merged,
        logger=instantiate_group(cfg.get("logger")) or False,
        callbacks=progress_for_output(instantiate_group(cfg.get("callbacks")), str(cfg.stage)),
    )


def last_checkpoint(out_dir: str | Path) -> Path | None:
    """``<out_dir>/checkpoints/last.ckpt`` when an earlier run left one, for exact resume."""
    path = Path(out_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def resume_checkpoint(ctx: StageContext) -> Path | None:
    """The Lightning checkpoint a training stage continues from: ``ckpt_path`` (``last`` or a
    file), or the stage's own ``last.ckpt`` when an interrupted attempt of this config left one."""
    wanted = ctx.params.get("ckpt_path")
    if wanted == "last":
        found = last_checkpoint(ctx.out_dir)
        if found is None:
            raise UserError(f"ckpt_path=last: {ctx.out_dir}/checkpoints/last.ckpt does not exist")
        return found
    if wanted:
        if not Path(wanted).is_file():
            raise UserError(f"ckpt_path: {wanted} does not exist; fix the path or use last")
        return Path(wanted)
    return last_checkpoint(ctx.out_dir) if ctx.resume else None
