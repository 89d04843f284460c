"""Every command line README.md shows composes as written (``--cfg job``) and passes the checks a
stage makes at start-up, so a README example cannot rot unnoticed.

Commands are read from the README's code blocks (fenced or indented, ``\\`` continuations joined)
and inline code; each runs in this process through its module's real entry point with
``--cfg job`` appended. Placeholders are filled in: ``src.<stage>`` with every stage of the
smoke chain, ``NAME`` with ``smoke``, ``<param>=a,b`` with ``seed=0,1``, ``<run_dir>`` with a run
folder, and ``...`` ("the rest as above") with the arguments a module cannot run without.
A multirun (``-m``) is composed once per job of its sweep; a chain (its first job) additionally
goes through the runner's up-front check of every stage.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import itertools
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.params import check_params, whole_value_overrides
from src.common.stage import CONFIG_DIR
from src.common.weights import parse_args as weights_args
from src.gpu_check import parse_args as gpu_check_args
from src.pipeline.runner import ChainRunner
from src.stylegan3.convert import parse_args as convert_args

README = Path(__file__).resolve().parents[1] / "README.md"
SMOKE_STAGES = list(OmegaConf.load(CONFIG_DIR / "experiment" / "smoke.yaml").pipeline.stages)
# What ``...`` stands for: the arguments each module needs before anything else.
REST = {
    "src.blend": ["blend.base=base.pt", "blend.tuned=tuned.pt"],
    "src.stylegan3": ["stylegan3.data=cartoons/"],
    "src.photo2cartoon": ["photo2cartoon.data.root=faces/"],
}
PLACEHOLDERS = {"<param>=a,b": "seed=0,1", "<run_dir>": "runs/smoke", "NAME": "smoke"}


def no_arguments(args: list[str]) -> None:
    assert not args, f"takes no key=value arguments: {args}"


# Modules that are not Hydra apps, and how their arguments are checked.
PLAIN_MODULES = {
    "src.common.weights": weights_args,
    "src.gpu_check": gpu_check_args,
    "src.stylegan3.convert": convert_args,
    "src.stylegan3.ops.cuda.build": no_arguments,
}


@dataclass(frozen=True)
class Command:
    line: int
    module: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"README.md:{self.line}: python -m {self.module} {shlex.join(self.args)}"


def readme_command_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, command)`` of every ``python -m src.`` command the README shows."""
    found = []
    lines = text.splitlines()
    fenced = False
    number = 0
    while number < len(lines):
        line = lines[number]
        start = number + 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            while line.endswith("\\") and number + 1 < len(lines):
                number += 1
                line = line[:-1] + " " + lines[number].strip()
            match = re.search(r"python -m src\.\S*.*", line)
            if match:
                found.append((start, match.group(0)))
        else:
            found += [(start, span) for span in re.findall(r"`(python -m src\.[^`]*)`", line)]
        number += 1
    return found


def expand(line_number: int, command: str) -> list[Command]:
    """The commands a README line stands for, placeholders filled in."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"], command
    module, args = words[2], words[3:]
    modules = (
        [module.replace("<stage>", s) for s in SMOKE_STAGES] if "<stage>" in module else [module]
    )
    commands = []
    for name in modules:
        filled: list[str] = []
        for arg in args:
            filled += REST[name] if arg == "..." else [arg]
        commands.append(Command(line_number, name, tuple(filled)))
    return commands


def readme_commands() -> list[Command]:
    text = README.read_text(encoding="utf-8")
    return [c for n, line in readme_command_lines(text) for c in expand(n, line)]


def sweep_jobs(args: tuple[str, ...]) -> list[list[str]]:
    """The argument lists of a multirun's jobs (``-m`` dropped, each sweep's values expanded)."""
    if "-m" not in args:
        return [list(args)]
    args = tuple(a for a in args if a != "-m")
    parser = OverridesParser.create()
    choices = []
    for arg in args:
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            key = arg.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([arg])
    return [list(job) for job in itertools.product(*choices)]


def run_in_process(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """``python -m module args`` in this process: what it prints; fails on a non-zero exit."""
    monkeypatch.setattr(sys, "argv", [module, *args])
    printed, errors = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            code = exit_.code or 0
    assert code == 0, f"exit {code}: {errors.getvalue().strip()}"
    return printed.getvalue()


def composed_job(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> DictConfig:
    """``python -m module args --cfg job --resolve`` in this process: the config it prints."""
    cfg = OmegaConf.create(
        run_in_process(module, [*args, "--cfg", "job", "--resolve"], monkeypatch)
    )
    assert isinstance(cfg, DictConfig)
    return cfg


@functools.cache
def stage_defaults(stage: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(stage)


def check_parameters(cfg: DictConfig, args: list[str], whole_chain: bool) -> None:
    """What the stage (or, for a chain, the runner) checks before any work starts."""
    stage = cfg.get("stage")
    if stage == "pipeline" and whole_chain:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            overrides = whole_value_overrides(args)
            runner = ChainRunner(compose("pipeline", overrides), overrides)
            for name in runner.stages:
                runner.compose_stage(name)
    elif stage is not None:
        check_params(cfg, stage, stage_defaults(stage))


def check_command(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose ``command`` as its module would and check its parameters; raise if it fails."""
    if command.module in PLAIN_MODULES:
        assert importlib.util.find_spec(command.module) is not None
        PLAIN_MODULES[command.module](list(command.args))
        return
    if "--help" in command.args:
        stage = command.module.removeprefix("src.")
        assert run_in_process(command.module, list(command.args), monkeypatch).startswith(stage)
        return
    for index, job in enumerate(sweep_jobs(command.args)):
        check_parameters(composed_job(command.module, job, monkeypatch), job, index == 0)


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_kind() -> None:
    modules = {c.module for c in COMMANDS}
    assert len(COMMANDS) > 40
    assert {"src.pipeline", "src.blend", "src.serve.bot", "src.common.weights"} <= modules
    assert {f"src.{s}" for s in SMOKE_STAGES} <= modules
    assert sum(1 for c in COMMANDS if "blend.weights" in " ".join(c.args)) >= 2


# runpy warns that a package's module was imported before it runs as __main__: harmless here.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package")
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(c, marks=pytest.mark.slow) if c.module == "src.pipeline" else c
        for c in COMMANDS
    ],
    ids=str,
)
def test_readme_command_composes(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    check_command(command, monkeypatch)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package")
@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("python -m src.pix2pix pix2pix.n_epoch=3", "exit 1"),
        ("python -m src.pix2pix +pix2pix.n_epoch=3", "did you mean pix2pix.n_epochs?"),
        ("python -m src.blend ... blend.preview_psi=abc", "blend.preview_psi=abc"),
        ("python -m src.pipeline +experiment=smoke cleaner.batch_size=0", "must be >= 1"),
        ("python -m src.stylegan3.convert in=a.pkl", "missing out="),
    ],
)
def test_a_broken_example_fails(line: str, complaint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (command,) = expand(0, line)
    with pytest.raises((AssertionError, UserError), match=re.escape(complaint)):
        check_command(command, monkeypatch)


def test_extraction_joins_continuations_and_reads_inline_code() -> None:
    text = (
        "Run `python -m src.blend` first.\n\n"
        "```bash\n.venv/bin/python -m src.serve.bot a=1 \\\n    'b=[2]'  # note\n```\n\n"
        "    python -m src.<stage> x=1\n"
    )
    lines = readme_command_lines(text)
    assert lines == [
        (1, "python -m src.blend"),
        (4, "python -m src.serve.bot a=1  'b=[2]'  # note"),
        (8, "python -m src.<stage> x=1"),
    ]
    assert expand(4, lines[1][1])[0].args == ("a=1", "b=[2]")
    assert [c.module for c in expand(8, lines[2][1])] == [f"src.{s}" for s in SMOKE_STAGES]


def test_the_detector_example_registers_a_working_backend(tmp_path: Path) -> None:
    """The README's "Your own face detector" script, run as a module: registers ``centre``."""
    section = README.read_text(encoding="utf-8").split("## Your own face detector", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "my_cartoonize"}
    exec(compile(code, "README.md", "exec"), namespace)

    from src.faces import make_detector

    with pytest.raises(UserError, match=r"cartoonize\.detector\.options\.model_file"):
        make_detector("centre", model_file=str(tmp_path / "missing.bin"))
    model_file = tmp_path / "x.bin"
    model_file.write_bytes(b"model")
    (face,) = make_detector("centre", model_file=str(model_file)).detect(
        np.zeros((100, 200, 3), np.uint8)
    )
    assert face.box == (75.0, 25.0, 50.0, 50.0)
    assert face.has("left_eye", "right_eye")
