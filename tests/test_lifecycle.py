"""Runs that never lie: SIGTERM stops a chain, a stage folder is locked while its stage runs,
stages die with the runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.common.lifecycle import StageLock
from tests.conftest import REPO_ROOT, TEST_CONFIGS, run_module


def start_module(module: str, *overrides: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m module overrides...`` started in the background, output captured."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **env}
    full_env.pop("TOONFORGE_ROOT", None)
    return subprocess.Popen(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def chain(root: Path) -> list[str]:
    return [f"--config-dir={TEST_CONFIGS}", "+experiment=fakes", f"paths.root_dir={root}"]


def fake_a(root: Path) -> list[str]:
    """The fake stage on its own, in the folder the fake chain uses."""
    return [f"--config-dir={TEST_CONFIGS}", f"paths.root_dir={root}", "run_name=chain"]


def run_fake_a(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.stages.fake_a", *fake_a(root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stage_pid(folder: Path) -> int:
    return int((folder / ".lock").read_text())


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    holder = f"in use by process {os.getpid()}"
    with StageLock(tmp_path, "pix2pix"), pytest.raises(UserError, match=holder):
        StageLock(tmp_path, "pix2pix").acquire()
    with StageLock(tmp_path, "pix2pix"):
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and /proc: Linux")
def test_second_run_of_a_running_stage_fails_at_once_and_a_killed_holder_frees_it(
    tmp_path: Path,
) -> None:
    slow = {"SLOW_FAKE_A_S": "30"}
    first = start_module("tests.stages.fake_a", *fake_a(tmp_path), env=slow)
    folder = tmp_path / "runs" / "chain" / "fake_a"
    try:
        wait_for(lambda: (folder / "started.json").exists())
        started = time.monotonic()
        second = run_fake_a(tmp_path)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: fake_a: {folder} is in use by process {first.pid} (another run of this "
            "stage); wait for it to finish or stop it, then run again"
        ]
        assert time.monotonic() - started < 30
    finally:
        first.kill()
        first.wait()
    # kill -9 leaves no stale lock: the next run takes it and finishes.
    third = run_fake_a(tmp_path)
    assert third.returncode == 0, third.stderr
    assert (folder / "done.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_kill_9_of_the_runner_takes_the_running_stage_with_it(tmp_path: Path) -> None:
    runner = start_module("src.pipeline", *chain(tmp_path), env={"SLOW_FAKE_A_S": "30"})
    folder = tmp_path / "runs" / "chain" / "fake_a"
    wait_for(lambda: (folder / ".lock").exists() and (folder / ".lock").read_text().strip() != "")
    pid = stage_pid(folder)
    assert alive(pid)
    runner.kill()
    runner.wait()
    wait_for(lambda: not alive(pid), timeout=20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_sigterm_to_the_runner_stops_the_chain_and_names_the_stage(tmp_path: Path) -> None:
    runner = start_module("src.pipeline", *chain(tmp_path), env={"SLOW_FAKE_A_S": "2"})
    folder = tmp_path / "runs" / "chain" / "fake_a"
    wait_for(lambda: (folder / "items" / "0.txt").exists())
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 143, stderr
    assert "fake_a: stopped by SIGTERM; run the same command again to resume" in stderr
    assert "fake_a was interrupted (SIGTERM)" in " ".join(stderr.split())
    assert not (folder / "done.json").exists()
    assert not (tmp_path / "runs" / "chain" / "fake_b").exists()


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (children, their children...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_kill_9_of_toyfaces_takes_its_workers_and_resource_tracker_along(tmp_path: Path) -> None:
    stage = start_module(
        "src.common.toyfaces",
        f"paths.root_dir={tmp_path}",
        "toyfaces.workers=2",
        "toyfaces.paired_count=4000",
        "toyfaces.train_count=0",
        "toyfaces.test_count=0",
        env={"OMP_NUM_THREADS": "1"},
    )
    paired = tmp_path / "runs" / "default" / "toyfaces" / "paired" / "A"
    try:
        wait_for(lambda: paired.is_dir() and any(paired.glob("*.png")), timeout=120)
        helpers = descendants(stage.pid)
        assert len(helpers) >= 2, "the workers (and the resource tracker) run"
    finally:
        stage.kill()
        stage.wait()
    wait_for(lambda: not any(alive(pid) for pid in helpers), timeout=20)


def smoke_chain(root: Path) -> list[str]:
    """A real chain: tiny toy faces, pix2pix on their pairs for 6 epochs, then cartoonize."""
    return [
        "+experiment=smoke",
        f"paths.root_dir={root}",
        "pipeline.stages=[toyfaces,pix2pix,cartoonize]",
        "toyfaces.paired_count=16",
        "toyfaces.train_count=0",
        "toyfaces.test_count=0",
        "toyfaces.contact_sheet_pairs=0",
        "pix2pix.data.manifest=null",
        "pix2pix.data.root=${paths.run_dir}/toyfaces/paired",
        "pix2pix.n_epochs=6",
        "pix2pix.n_epochs_decay=0",
        "pix2pix.ground_truth.root=null",
        "callbacks=minimal",
        "+trainer.enable_progress_bar=false",
    ]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_sigterm_mid_training_saves_last_ckpt_stops_the_chain_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    env = {"OMP_NUM_THREADS": "1"}
    runner = start_module("src.pipeline", *smoke_chain(tmp_path), env=env)
    run_dir = tmp_path / "runs" / "smoke"
    checkpoints = run_dir / "pix2pix" / "checkpoints"
    wait_for(lambda: runner.poll() is not None or any(checkpoints.glob("epoch*.ckpt")), 240)
    assert runner.poll() is None, runner.communicate()[1][-3000:]
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 143, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "stopped by SIGTERM" in line]
    assert lines == [
        f"error: pix2pix: stopped by SIGTERM, saved {checkpoints / 'last.ckpt'}; run the same "
        "command again to resume"
    ]
    assert "pix2pix was interrupted (SIGTERM)" in " ".join(stderr.split())
    saved = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] > 0 and saved["epoch"] < 6
    assert not (run_dir / "pix2pix" / "done.json").exists()
    assert not (run_dir / "cartoonize").exists()

    again = run_module("src.pipeline", *smoke_chain(tmp_path), env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert f"Restoring states from the checkpoint path at {checkpoints / 'last.ckpt'}" in output
    record = json.loads((run_dir / "pix2pix" / "done.json").read_text())
    assert record["resumed"] is True
    assert (run_dir / "cartoonize" / "done.json").exists()


@pytest.mark.parametrize(
    ("code", "tail"),
    [
        (
            "ENOSPC",
            "No space left on device; the disk is full; free some space, then run the "
            "same command again",
        ),
        (
            "EROFS",
            "Read-only file system; the file system is read-only; choose another folder "
            "(paths.root_dir=...)",
        ),
        (
            "EACCES",
            "Permission denied; fix its permissions or choose another folder (paths.root_dir=...)",
        ),
    ],
)
def test_environment_failures_in_a_stage_are_one_line(tmp_path: Path, code: str, tail: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.stages.fake_a", *fake_a(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "ERRNO_FAKE_A": code},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    item = tmp_path / "runs" / "chain" / "fake_a" / "items" / "0.txt"
    assert result.stderr.strip().splitlines() == [f"error: fake_a: {item}: {tail}"]


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs an unwritable /sys")
def test_an_unwritable_output_root_is_one_line_before_hydra_writes(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.stages.fake_a",
            f"--config-dir={TEST_CONFIGS}",
            "paths.root_dir=/sys/toonforge-test",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: fake_a: /sys/toonforge-test")
    assert "choose another folder (paths.root_dir=...)" in line


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock: Linux")
def test_a_second_pipeline_on_the_same_run_stops_at_the_locked_stage(tmp_path: Path) -> None:
    first = start_module("src.pipeline", *chain(tmp_path), env={"SLOW_FAKE_A_S": "4"})
    folder = tmp_path / "runs" / "chain" / "fake_a"
    try:
        wait_for(lambda: (folder / "items" / "0.txt").exists())
        second = subprocess.run(
            [sys.executable, "-m", "src.pipeline", *chain(tmp_path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1
        assert f"error: fake_a: {folder} is in use by process {stage_pid(folder)}" in second.stderr
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in (folder / "items").iterdir()) == [f"{i}.txt" for i in range(5)]
