"""Build a Lightning Trainer from the shared config groups and a stage's own loop settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``logger`` or ``callbacks`` group (a dict of configs)."""
    if not node:
        return []
    return [instantiate(conf) for conf in node.values() if conf and "_target_" in conf]


def make_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` with ``cfg.<stage>.trainer`` and ``overrides`` on top.

    The shared group says where to run (cpu, gpu, ddp); the stage says how long (max_epochs,
    max_steps, ...). Loggers and callbacks come from the ``logger`` and ``callbacks`` groups.
    """
    stage_trainer = OmegaConf.select(cfg, f"{cfg.stage}.trainer", default=None)
    merged = {
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        **(OmegaConf.to_container(stage_trainer, resolve=True) if stage_trainer else {}),
        **overrides,
    }
    return instantiate(
        merged,
        logger=instantiate_group(cfg.get("logger")) or False,
        callbacks=instantiate_group(cfg.get("callbacks")),
    )


def last_checkpoint(out_dir: str | Path) -> Path | None:
    """``<out_dir>/checkpoints/last.ckpt`` when an earlier run left one, for exact resume."""
    path = Path(out_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None
