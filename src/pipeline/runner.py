"""The chain runner: run an experiment's stages in order, skipping the ones already finished.

Each stage runs as its own process (``python -m <entry point>`` with the forwarded overrides),
exactly as a user would launch it by hand, so DDP, progress bars and crashes behave the same.
Whether a stage is finished is decided here without starting it: its config is composed in
this process and compared with the ``done.json`` it wrote (see ``src.common.stage``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from src.common.errors import UserError
from src.common.lifecycle import TERMINATED_EXIT_CODE, die_with_parent
from src.common.params import check_params
from src.common.stage import CONFIG_DIR, config_hash, read_record, upstream_run_ids, why_not_done

# Runner-only settings: never passed on to a stage.
RUNNER_ONLY_KEYS = ("pipeline.force", "pipeline.entry_points")
# Hydra settings a stage must share with the runner so it composes the same config.
FORWARDED_HYDRA_KEYS = ("hydra.searchpath",)


@dataclass
class StageOutcome:
    """How one stage of the chain went."""

    stage: str
    status: str  # "skipped", "ran", "failed" or "interrupted"
    reason: str
    seconds: float
    out_dir: Path


def first_key_component(key: str) -> str:
    """``pix2pix`` for ``pix2pix.model.ngf``, ``pix2pix/model`` or ``+pix2pix.x``."""
    return re.split(r"[./@]", key.lstrip("+~"), maxsplit=1)[0]


def overrides_for_stage(overrides: Sequence[str], stage: str, stages: Sequence[str]) -> list[str]:
    """The command-line overrides ``stage`` should get: shared ones and its own namespace."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    kept = []
    for override in parsed:
        key = override.key_or_group
        owner = first_key_component(key)
        if owner in stages and owner != stage:
            continue
        if any(key == k or key.startswith(k + ".") for k in RUNNER_ONLY_KEYS):
            continue
        kept.append(override.input_line)
    return kept


def hydra_overrides_to_forward(hydra_overrides: Sequence[str]) -> list[str]:
    """The runner's ``hydra.*`` overrides a stage needs to compose the same config."""
    return [o for o in hydra_overrides if o.split("=", 1)[0].lstrip("+") in FORWARDED_HYDRA_KEYS]


def config_dir_args() -> list[str]:
    """``--config-dir`` for each config folder added on the runner's command line (``-cd``)."""
    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    return [f"--config-dir={s.path}" for s in sources if s.provider == "command-line"]


def entry_point(cfg: DictConfig, stage: str) -> str:
    """The module run for ``stage``: ``pipeline.entry_points.<stage>`` or ``src.<stage>``."""
    return str(OmegaConf.select(cfg, f"pipeline.entry_points.{stage}", default=f"src.{stage}"))


def validate_stages(cfg: DictConfig) -> list[str]:
    """``pipeline.stages`` as a list, checked against ``pipeline.force``."""
    stages = list(cfg.pipeline.stages or [])
    if not stages:
        raise UserError("pipeline.stages is empty: choose an experiment, e.g. +experiment=smoke")
    unknown = [s for s in cfg.pipeline.force or [] if s not in stages]
    if unknown:
        raise UserError(
            f"pipeline.force names {unknown}, which are not in pipeline.stages {stages}"
        )
    return stages


class ChainRunner:
    """Runs ``pipeline.stages`` for the composed runner config ``cfg``."""

    def __init__(
        self,
        cfg: DictConfig,
        task_overrides: Sequence[str],
        hydra_overrides: Sequence[str] = (),
        console: Console | None = None,
    ) -> None:
        self.cfg = cfg
        self.stages = validate_stages(cfg)
        self.task_overrides = list(task_overrides)
        self.hydra_overrides = hydra_overrides_to_forward(hydra_overrides)
        self.console = console or Console(stderr=True)
        self.run_dir = Path(cfg.paths.run_dir)
        self.defaults: dict[str, DictConfig] = {}

    def stage_overrides(self, stage: str) -> list[str]:
        """The overrides ``stage`` runs with: its share of the runner's, and the chain's run_name.

        run_name is always passed so that a sweep job's stages write into that job's folder;
        the forwarded ``hydra.*`` ones come first (the search path must reach compose too).
        """
        overrides = overrides_for_stage(self.task_overrides, stage, self.stages)
        overrides = [o for o in overrides if first_key_component(o) != "run_name"]
        quoted = str(self.cfg.run_name).replace("\\", "\\\\").replace("'", "\\'")
        return [*self.hydra_overrides, *overrides, f"run_name='{quoted}'"]

    def compose_stage(self, stage: str) -> DictConfig:
        """The config ``stage`` will run with, composed here without starting it."""
        try:
            stage_cfg = compose(config_name=stage, overrides=self.stage_overrides(stage))
        except MissingConfigException:
            raise UserError(
                f"pipeline.stages names '{stage}', which has no config {stage}.yaml in "
                f"{CONFIG_DIR} (or a --config-dir); fix the stage list"
            ) from None
        except ConfigCompositionException as err:
            raise UserError(f"{stage}: {err}") from None
        check_params(stage_cfg, stage, self.param_defaults(stage))
        return stage_cfg

    def param_defaults(self, stage: str) -> DictConfig:
        """The defaults ``stage``'s parameters are checked against, composed once per config.

        ``pipeline.yaml`` mounts every stage's namespace, so one compose serves the whole chain;
        a stage it does not know (a user's own) is composed from its own config.
        """
        for name in ("pipeline", stage):
            if name not in self.defaults:
                self.defaults[name] = compose(config_name=name, overrides=self.hydra_overrides)
            if stage in self.defaults[name]:
                break
        return self.defaults[name]

    def why_run(self, stage: str, stage_cfg: DictConfig) -> str | None:
        """Why ``stage`` must run now (None: finished and up to date).

        Asked just before the stage's turn, since an earlier stage that reran changes the answer.
        """
        upstream = upstream_run_ids(stage_cfg, stage, self.run_dir)
        reason = why_not_done(Path(stage_cfg.out_dir), config_hash(stage_cfg, stage), upstream)
        if reason is None and stage in (self.cfg.pipeline.force or []):
            reason = "forced"
        return reason

    def run(self) -> list[StageOutcome]:
        """Run or skip every stage in order; stop at the first failure.

        Every stage's config is composed first, so a mistake in any of them stops the chain
        before anything runs.
        """
        configs = {stage: self.compose_stage(stage) for stage in self.stages}
        outcomes = []
        for stage, stage_cfg in configs.items():
            reason = self.why_run(stage, stage_cfg)
            out_dir = Path(stage_cfg.out_dir)
            if reason is None:
                record = read_record(out_dir) or {}
                outcomes.append(
                    StageOutcome(stage, "skipped", "finished, config unchanged", 0.0, out_dir)
                )
                self.console.print(
                    f"[green]✓[/] {stage}: finished {time.ctime(record.get('finished_at', 0))}"
                    ", skipped"
                )
                continue
            command = [sys.executable, "-m", entry_point(self.cfg, stage)]
            command += [*config_dir_args(), f"--config-name={stage}", *self.stage_overrides(stage)]
            self.console.rule(f"{stage} ({reason})")
            start = time.time()
            code = run_stage_process(command)
            seconds = time.time() - start
            if code in (TERMINATED_EXIT_CODE, -signal.SIGTERM, -signal.SIGKILL):
                why = "SIGKILL" if code == -signal.SIGKILL else "SIGTERM"
                outcomes.append(StageOutcome(stage, "interrupted", why, seconds, out_dir))
                break
            if code != 0:
                outcomes.append(
                    StageOutcome(stage, "failed", f"exit code {code}", seconds, out_dir)
                )
                break
            outcomes.append(StageOutcome(stage, "ran", reason, seconds, out_dir))
        return outcomes

    def report(self, outcomes: Sequence[StageOutcome]) -> None:
        """A table of what happened, then where the outputs and the TensorBoard logs are."""
        table = Table(title=f"chain '{self.cfg.run_name}'")
        for column in ("stage", "status", "why", "time", "outputs"):
            table.add_column(column)
        colours = {"skipped": "green", "ran": "cyan", "failed": "red", "interrupted": "yellow"}
        for o in outcomes:
            table.add_row(
                o.stage,
                f"[{colours[o.status]}]{o.status}[/]",
                o.reason,
                f"{o.seconds:.1f}s",
                str(o.out_dir),
            )
        self.console.print(table)
        log_dir = Path(self.cfg.paths.log_dir)
        self.console.print(f"outputs:     {self.run_dir}/<stage>/")
        self.console.print(f"TensorBoard: tensorboard --logdir {log_dir}")
        failed = [o for o in outcomes if o.status == "failed"]
        interrupted = [o for o in outcomes if o.status == "interrupted"]
        if interrupted:
            self.console.print(
                f"[yellow]{interrupted[0].stage} was interrupted[/] ({interrupted[0].reason}); "
                "the chain stopped there. Run the same command again to resume it "
                "(finished stages are skipped)."
            )
        if failed:
            self.console.print(
                f"[red]{failed[0].stage} failed[/]: see the output above; fix it and run the "
                "same command again (finished stages are skipped)."
            )


def run_stage_process(command: Sequence[str]) -> int:
    """Run one stage's process to its end and return its exit status.

    The stage dies with the runner (``kill -9`` of the runner sends it SIGTERM), and a SIGTERM
    to the runner is passed on to it, so it can save what it resumes from and exit with 143.
    """
    runner_pid = os.getpid()
    process = subprocess.Popen(command, preexec_fn=lambda: die_with_parent(parent_pid=runner_pid))

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl+C reached the stage too (same process group): let it stop first.
        process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
