"""Stage bookkeeping shared by every stage and the chain runner.

A stage is a Hydra app whose primary config is ``configs/<stage>.yaml``; its own parameters live
under the key ``<stage>`` and its outputs under ``out_dir`` (``<runs_dir>/<run_name>/<stage>``).
``run_stage`` wraps a stage function with what every stage needs: the composed config saved
beside the outputs, seeding, a ``started.json`` while it runs (so a rerun knows it may resume),
a ``done.json`` when it finishes (so the runner can skip it), and user errors as one line.

This module imports no torch: the runner uses it to decide what to skip in well under a second.
"""

from __future__ import annotations

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
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from src.common.errors import UserError
from src.common.fileio import atomic_write_json, atomic_write_text
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


def config_hash(cfg: DictConfig, stage: str) -> str:
    """A short hash of everything in ``cfg`` that can change what ``stage`` writes.

    Other stages' namespaces, the runner's settings and Hydra's own node are left out, so tuning
    pix2pix never invalidates the finished toy-face stage.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    ignored = [*UNHASHED_KEYS, *container.get("hash_ignores", [])]
    for key in (*ignored, *(s for s in stage_names(cfg) if s != stage)):
        container.pop(key, None)
    payload = json.dumps(container, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def read_record(out_dir: Path, name: str = DONE_FILE) -> dict[str, Any] | None:
    """The JSON record ``name`` in ``out_dir``, or None when absent or unreadable."""
    try:
        return json.loads((out_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def upstream_run_ids(cfg: DictConfig, stage: str, run_dir: Path) -> dict[str, str]:
    """``run_id`` of each finished stage before ``stage`` in the chain, by stage name."""
    stages = stage_names(cfg)
    if stage not in stages:
        return {}
    ids = {}
    for earlier in stages[: stages.index(stage)]:
        record = read_record(run_dir / earlier)
        if record is not None:
            ids[earlier] = record["run_id"]
    return ids


def why_not_done(out_dir: Path, expected_hash: str, upstream: Mapping[str, str]) -> str | None:
    """None when ``out_dir`` holds a finished run of this config and these inputs; else why not."""
    record = read_record(out_dir)
    if record is None:
        return "interrupted" if (out_dir / STARTED_FILE).exists() else "not run yet"
    if record.get("config_hash") != expected_hash:
        return "config changed"
    recorded = record.get("upstream", {})
    for name, run_id in upstream.items():
        if recorded.get(name) != run_id:
            return f"{name} re-ran"
    missing = [p for p in record.get("outputs", []) if not (out_dir / p).exists()]
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

    Returns the ``done.json`` record. Exceptions from ``fn`` propagate after ``started.json``
    is left in place, so the next attempt knows it may resume.
    """
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
        print(f"{name}: done in {record['duration_s']:.1f}s -> {cfg.out_dir}")

    if {"--help", "-h"} & set(sys.argv[1:]):
        print(stage_help(requested_config_name(sys.argv[1:], stage)))
        return
    sys.argv[1:] = whole_value_overrides(sys.argv[1:])
    main()
