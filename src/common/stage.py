"""Stage bookkeeping shared by every stage and the chain runner.

A stage is a Hydra app whose primary config is ``configs/<stage>.yaml``; its own parameters live
under the key ``<stage>`` and its outputs under ``out_dir`` (``<runs_dir>/<run_name>/<stage>``).
``run_stage`` wraps a stage function with what every stage needs: the composed config saved
beside the outputs, seeding, a ``started.json`` while it runs (so a rerun knows it may resume),
an exclusive lock on the stage folder while it runs (``src.common.lifecycle``), a ``done.json``
with the SHA-256 of every output file when it finishes (so the runner can skip it and loaders
can check what they read), SIGTERM as exit status 143, and user and environment errors (full
disk, read-only folder) as one line.

This module imports no torch: the runner uses it to decide what to skip in well under a second.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from src.common.errors import UserError
from src.common.fileio import atomic_write_json, atomic_write_text
from src.common.integrity import CHECKSUMS_KEY, output_checksums
from src.common.lifecycle import (
    GUARD,
    TERMINATED_EXIT_CODE,
    StageLock,
    Terminated,
    is_secondary_rank,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DONE_FILE = "done.json"
STARTED_FILE = "started.json"
CONFIG_FILE = "config.yaml"
# Keys that never change what a stage writes, so they stay out of its config hash; a stage's
# config adds its own in ``hash_ignores``.
UNHASHED_KEYS = ("hydra", "pipeline", "hash_ignores")


def stage_names(cfg: DictConfig) -> list[str]:
    """The chain's stages in order (``pipeline.stages``), or ``[]`` outside a chain."""
    stages = OmegaConf.select(cfg, "pipeline.stages", default=None)
    return list(stages) if stages else []


def stage_config_names() -> set[str]:
    """Names of the stage configs (``<name>.yaml`` at the top of every config folder in use).

    A top-level key with such a name is that stage's namespace, whatever ``pipeline.stages``
    lists; config folders added with ``--config-dir`` or ``hydra.searchpath`` count too.
    """
    folders = {CONFIG_DIR}
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.schema == "file":
                folders.add(Path(source.path))
    return {p.stem for folder in folders for p in folder.glob("*.yaml")}


def relative_to_run(value: Any, prefixes: Sequence[tuple[str, str]]) -> Any:
    """``value`` with every string under one of ``prefixes`` (folder, placeholder) rewritten to
    start with the placeholder: how the output root is spelled then changes no hash."""
    if isinstance(value, dict):
        return {k: relative_to_run(v, prefixes) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_to_run(v, prefixes) for v in value]
    if isinstance(value, str):
        for folder, placeholder in prefixes:
            if value.rstrip("/") == folder:
                return placeholder
            if value.startswith(folder + "/"):
                return placeholder + "/" + value[len(folder) :].lstrip("/")
    return value


def config_hash(cfg: DictConfig, stage: str) -> str:
    """A short hash of everything in ``cfg`` that can change what ``stage`` writes.

    Other stages' namespaces, the runner's settings (the chain's stage list included) and
    Hydra's own node are left out, so tuning pix2pix never invalidates the finished toy-face
    stage; paths under the run folder and the output root are hashed relative to them, so
    ``.``, ``./`` and the absolute path of one root give one hash.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    ignored = [*UNHASHED_KEYS, *container.get("hash_ignores", [])]
    others = (stage_config_names() | set(stage_names(cfg))) - {stage}
    for key in (*ignored, *others):
        container.pop(key, None)
    paths = container.get("paths") or {}
    roots = ((paths.get("run_dir"), "<run_dir>"), (paths.get("root_dir"), "<root_dir>"))
    prefixes = [(str(f).rstrip("/") or "/", name) for f, name in roots if f]
    payload = json.dumps(relative_to_run(container, prefixes), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_record(out_dir: Path, name: str = DONE_FILE) -> dict[str, Any] | None:
    """The JSON object ``name`` in ``out_dir``, or None when absent, unreadable or not an object
    (a ``done.json`` holding ``[]`` is as good as none)."""
    try:
        record = json.loads((out_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def upstream_run_ids(cfg: DictConfig, stage: str, run_dir: Path) -> dict[str, str]:
    """``run_id`` of each finished stage before ``stage`` in the chain, by stage name."""
    stages = stage_names(cfg)
    if stage not in stages:
        return {}
    ids = {}
    for earlier in stages[: stages.index(stage)]:
        record = read_record(run_dir / earlier)
        if record is not None and isinstance(record.get("run_id"), str):
            ids[earlier] = record["run_id"]
    return ids


def why_not_done(out_dir: Path, expected_hash: str, upstream: Mapping[str, str]) -> str | None:
    """None when ``out_dir`` holds a finished run of this config and these inputs; else why not."""
    record = read_record(out_dir)
    if record is None:
        if (out_dir / DONE_FILE).exists():
            return "done.json unreadable"
        return "interrupted" if (out_dir / STARTED_FILE).exists() else "not run yet"
    if record.get("config_hash") != expected_hash:
        return "config changed"
    recorded = record.get("upstream")
    outputs = record.get("outputs")
    if not isinstance(recorded, dict) or not isinstance(outputs, list):
        return "done.json unreadable"
    for name, run_id in upstream.items():
        if recorded.get(name) != run_id:
            return f"{name} re-ran"
    missing = [p for p in outputs if not isinstance(p, str) or not (out_dir / p).exists()]
    if missing:
        return f"outputs missing: {missing[0]}"
    return None


@dataclass
class StageContext:
    """What a stage function gets: its config, where to write, and whether it may resume."""

    stage: str
    cfg: DictConfig
    out_dir: Path
    config_hash: str
    # True when an earlier attempt with the same config was interrupted: keep its finished work.
    resume: bool
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> DictConfig:
        """The stage's own parameters: ``cfg.<stage>``."""
        node = self.cfg.get(self.stage)
        return node if node is not None else OmegaConf.create({})

    @property
    def run_dir(self) -> Path:
        """The chain's folder, holding every stage's ``out_dir``."""
        return Path(self.cfg.paths.run_dir)


StageFn = Callable[[StageContext], Iterable[str]]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and, when the stage uses them, torch and Lightning (seed 0 included)."""
    if "lightning" in sys.modules:
        import lightning

        lightning.seed_everything(seed, workers=True, verbose=False)
        return
    random.seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def apply_sweep_run_name(cfg: DictConfig) -> None:
    """In a Hydra sweep, give each job its own chain folder: ``<run_name>/<override_dirname>``."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    job = HydraConfig.get().job
    suffix = job.override_dirname or f"job{job.num}"
    cfg.run_name = f"{cfg.run_name}/{suffix}"


def execute_stage(stage: str, fn: StageFn, cfg: DictConfig) -> dict[str, Any]:
    """Run ``fn`` for ``stage`` with the bookkeeping described in the module docstring.

    Returns the ``done.json`` record. The stage folder is locked while ``fn`` runs (a second
    run of the same stage fails at once). Exceptions from ``fn`` propagate after
    ``started.json`` is left in place, so the next attempt knows it may resume.
    """
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = StageLock(out_dir, stage)
    if not is_secondary_rank():
        lock.acquire()
    try:
        return _execute_locked(stage, fn, cfg, out_dir)
    finally:
        lock.release()


def _execute_locked(stage: str, fn: StageFn, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    digest = config_hash(cfg, stage)
    started = read_record(out_dir, STARTED_FILE)
    done = read_record(out_dir)
    resume = done is None and started is not None and started.get("config_hash") == digest
    (out_dir / DONE_FILE).unlink(missing_ok=True)
    upstream = upstream_run_ids(cfg, stage, Path(cfg.paths.run_dir))
    started_at = time.time()
    atomic_write_json(out_dir / STARTED_FILE, {"config_hash": digest, "started_at": started_at})
    atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed))

    ctx = StageContext(stage, cfg, out_dir, digest, resume, upstream)
    outputs = sorted(set(fn(ctx)))
    finished_at = time.time()
    record = {
        "stage": stage,
        "config_hash": digest,
        "run_id": uuid.uuid4().hex,
        "outputs": outputs,
        CHECKSUMS_KEY: output_checksums(out_dir, outputs),
        "upstream": upstream,
        "resumed": resume,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": round(finished_at - started_at, 3),
    }
    atomic_write_json(out_dir / DONE_FILE, record)
    (out_dir / STARTED_FILE).unlink(missing_ok=True)
    return record


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit: the one-line form of every user mistake."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_stage(stage: str, fn: StageFn) -> None:
    """Entry point of ``python -m <module>``: compose ``configs/<stage>.yaml``, run ``fn``.

    ``--config-name=<other>`` runs the same module as another stage of a chain (an alias such as
    ``stylegan3_photo``): that config sets ``stage: <other>`` and mounts the module's parameters
    under ``<other>``, so both instances keep their own outputs and overrides.
    """

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=stage)
    def main(cfg: DictConfig) -> None:
        apply_sweep_run_name(cfg)
        name = str(cfg.get("stage") or stage)
        GUARD.install()
        try:
            record = execute_stage(name, fn, cfg)
        except UserError as err:
            fail(str(err))
        except MissingMandatoryValue as err:
            fail(f"{name}: config key '{err.full_key}' has no value; set it: {err.full_key}=...")
        except InterpolationResolutionError as err:
            fail(f"{name}: config key '{err.full_key}' does not resolve: {err.msg}")
        except KeyboardInterrupt:
            fail(f"{name}: interrupted; run the same command again to continue", code=130)
        except OSError as err:
            message = environment_error(err)
            if message is None:
                raise
            fail(f"{name}: {message}")
        except (Terminated, SystemExit):
            if not GUARD.received:
                raise
            saved = _saved_checkpoint(Path(cfg.out_dir))
            fail(
                f"{name}: stopped by SIGTERM{saved}; run the same command again to resume",
                code=TERMINATED_EXIT_CODE,
            )
        finally:
            GUARD.uninstall()
        print(f"{name}: done in {record['duration_s']:.1f}s -> {cfg.out_dir}")

    main()


def _saved_checkpoint(out_dir: Path) -> str:
    """``, saved <last.ckpt>`` when a training stage left one to resume from, else ``""``."""
    last = out_dir / "checkpoints" / "last.ckpt"
    return f", saved {last}" if last.is_file() else ""


ENVIRONMENT_FIXES = {
    errno.EACCES: "fix its permissions or choose another folder (paths.root_dir=...)",
    errno.EPERM: "fix its permissions or choose another folder (paths.root_dir=...)",
    errno.EROFS: "the file system is read-only; choose another folder (paths.root_dir=...)",
    errno.ENOSPC: "the disk is full; free some space, then run the same command again",
    errno.EDQUOT: "the disk quota is used up; free some space, then run the same command again",
}


def environment_error(err: OSError) -> str | None:
    """One line for an OSError the environment causes (permissions, read-only or full disk):
    the path, what failed and the fix; None for any other error."""
    fix = ENVIRONMENT_FIXES.get(err.errno or -1)
    if fix is None:
        return None
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}; {fix}"


class OutputFolderCheck(Callback):
    """Hydra callback: create the run's output folder before Hydra does, so an unwritable,
    read-only or full output root is one line (``configs/hydra/default.yaml``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = OmegaConf.select(config, "hydra.run.dir", default=None)
        if folder is None:
            return
        try:
            Path(str(folder)).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            message = environment_error(err)
            if message is None:
                raise
            fail(f"{config.get('stage', 'run')}: {message}")
