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
import itertools
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra import compose
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
from src.common.params import check_params, whole_value_overrides

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DONE_FILE = "done.json"
STARTED_FILE = "started.json"
SWEEP_INDEX = "sweep_jobs.jsonl"
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


def sweep_job_folder(override_dirname: str) -> str:
    """A sweep job's folder name: short, one path component, the same for the same overrides.

    The overrides, made safe and cut to 40 characters, then 8 hex digits of their SHA-256: a
    path value never nests folders and eleven overrides never exceed the file-name limit.
    """
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", override_dirname)[:40].strip("_.")
    return f"{readable}-{digest}" if readable else digest


def current_sweep_job() -> tuple[str, str] | None:
    """``(folder, overrides)`` of this Hydra sweep job, or None outside a sweep."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    job = HydraConfig.get().job
    overrides = job.override_dirname or f"job{job.num}"
    return sweep_job_folder(overrides), overrides


def record_sweep_job(index_dir: Path, folder: str, overrides: str) -> None:
    """Add ``folder``'s overrides to ``index_dir/sweep_jobs.jsonl``, the sweep's readable index."""
    index = index_dir / SWEEP_INDEX
    known = index.read_text(encoding="utf-8") if index.exists() else ""
    line = json.dumps({"folder": folder, "overrides": overrides}) + "\n"
    if line not in known:
        index_dir.mkdir(parents=True, exist_ok=True)
        with index.open("a", encoding="utf-8") as file:
            file.write(line)


def apply_sweep_run_name(cfg: DictConfig) -> None:
    """In a sweep of whole chains, give each job its own chain folder ``<run_name>/<job>``."""
    job = current_sweep_job()
    if job is None:
        return
    folder, overrides = job
    record_sweep_job(Path(cfg.paths.run_dir), folder, overrides)
    cfg.run_name = f"{cfg.run_name}/{folder}"


def apply_sweep_out_dir(cfg: DictConfig, stage: str) -> None:
    """In a sweep of one stage, write each job to ``<run_dir>/<job>/<stage>``.

    The run folder stays the chain's, so the stage still reads the earlier stages' outputs
    (``${paths.run_dir}/toyfaces``) of the run it belongs to.
    """
    job = current_sweep_job()
    if job is None:
        return
    folder, overrides = job
    run_dir = Path(cfg.paths.run_dir)
    record_sweep_job(run_dir, folder, overrides)
    cfg.out_dir = str(run_dir / folder / stage)


def searchpath_overrides() -> list[str]:
    """The running app's ``hydra.searchpath`` overrides: needed to compose its configs again."""
    hydra_overrides = HydraConfig.get().overrides.hydra
    return [o for o in hydra_overrides if o.lstrip("+").startswith("hydra.searchpath")]


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


def stage_help(config_name: str) -> str:
    """``--help`` of a stage: its name, how to run it and its parameters with their comments.

    The parameters are the stage's ``configs/<group>/default.yaml`` as written, comments
    included (the composed config Hydra would print has none): what each key does is said there.
    """
    primary = CONFIG_DIR / f"{config_name}.yaml"
    text = primary.read_text(encoding="utf-8") if primary.is_file() else ""
    header = itertools.takewhile(lambda line: line.startswith("#"), text.splitlines())
    usage = [line[2:] for line in header]
    lines = [f"{config_name}: a toonforge stage; its parameters are {config_name}.<key>", ""]
    lines += [*usage, ""] if usage else []
    defaults = (yaml.safe_load(text) or {}).get("defaults", []) if text else []
    for entry in defaults:
        if not isinstance(entry, dict):
            continue
        ((group, option),) = entry.items()
        if group.split("@")[-1] == config_name and isinstance(option, str):
            source = CONFIG_DIR / group.split("@")[0] / f"{option}.yaml"
            params = source.read_text(encoding="utf-8").rstrip().splitlines()
            lines += [f"Parameters ({source.relative_to(CONFIG_DIR.parent)}):", ""]
            lines += [f"  {line}" if line else "" for line in params] + [""]
    lines += [
        "Set them as key=value, or choose an experiment: +experiment=NAME (configs/experiment/).",
        "Shared: run_name=, seed=, trainer=cpu|gpu|ddp, logger=, paths.root_dir=, launcher=",
        "(with -m). --cfg job prints the composed config; --hydra-help shows Hydra's options.",
    ]
    return "\n".join(lines)


def requested_config_name(argv: Sequence[str], default: str) -> str:
    """The ``--config-name`` (or ``-cn``) given in ``argv``, else ``default``."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config-name="):
            return arg.split("=", 1)[1]
        if arg in ("--config-name", "-cn") and index + 1 < len(argv):
            return argv[index + 1]
    return default


def run_stage(stage: str, fn: StageFn) -> None:
    """Entry point of ``python -m <module>``: compose ``configs/<stage>.yaml``, run ``fn``.

    ``--config-name=<other>`` runs the same module as another stage of a chain (an alias such as
    ``stylegan3_photo``): that config sets ``stage: <other>`` and mounts the module's parameters
    under ``<other>``, so both instances keep their own outputs and overrides.
    """

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=stage)
    def main(cfg: DictConfig) -> None:
        name = str(cfg.get("stage") or stage)
        GUARD.install()
        apply_sweep_out_dir(cfg, name)
        try:
            defaults = compose(HydraConfig.get().job.config_name, searchpath_overrides())
            check_params(cfg, name, defaults)
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

    if {"--help", "-h"} & set(sys.argv[1:]):
        print(stage_help(requested_config_name(sys.argv[1:], stage)))
        return
    sys.argv[1:] = whole_value_overrides(sys.argv[1:])
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
