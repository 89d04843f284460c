"""A run killed with SIGKILL resumes to exactly N verified pairs; two CPU processes (DDP,
gloo) split the seeds and one manifest holds the union with no seed twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.common.fileio import sha256_file
from tests.conftest import REPO_ROOT, run_module
from tests.dataset_gen.conftest import run_in_process, stage_overrides

COUNT = 120
# Tiny networks gain nothing from threads, and on a busy machine idle threads spin.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def check_complete(out: Path, seeds: list[int]) -> list[dict]:
    """Exactly one verified pair per seed, no other and no temporary file."""
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == seeds
    for row in rows:
        assert sha256_file(out / row["a"]) == row["sha256_a"]
        assert sha256_file(out / row["b"]) == row["sha256_b"]
    for folder in ("A", "B"):
        assert sorted(p.name for p in (out / folder).iterdir()) == [f"{s:06d}.png" for s in seeds]
    return rows


def reused_and_made(stdout: str) -> tuple[int, int]:
    found = re.search(r"\((\d+) reused, (\d+) made", stdout)
    assert found, stdout
    return int(found.group(1)), int(found.group(2))


@pytest.mark.slow
def test_sigkill_halfway_then_rerun_ends_with_every_pair_once(tmp_path: Path, nets) -> None:
    args = stage_overrides(tmp_path, nets, f"dataset_gen.seeds=0-{COUNT - 1}")
    args += ["dataset_gen.batch_size=4"]
    out = tmp_path / "runs" / "default" / "dataset_gen"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **ONE_THREAD}
    process = subprocess.Popen(
        [sys.executable, "-m", "src.dataset_gen", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "B").is_dir() and len(os.listdir(out / "B")) >= COUNT // 3:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert not (out / "manifest.jsonl").exists()
    made_before = len(os.listdir(out / "B"))
    assert made_before < COUNT

    rerun = run_module("src.dataset_gen", *args, env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr
    check_complete(out, list(range(COUNT)))
    reused, made = reused_and_made(rerun.stdout)
    assert reused + made == COUNT
    assert COUNT // 3 - 2 <= reused <= made_before


@pytest.mark.slow
def test_two_cpu_processes_write_the_union_of_their_shards(tmp_path: Path, nets) -> None:
    run_in_process(tmp_path, nets, "dataset_gen.seeds=0-5")
    result = run_module(
        "src.dataset_gen",
        *stage_overrides(tmp_path, nets, "dataset_gen.seeds=0-20", "dataset_gen.batch_size=3"),
        "+trainer.strategy=ddp",
        "trainer.devices=2",
        env=ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr
    rows = check_complete(tmp_path / "runs" / "default" / "dataset_gen", list(range(21)))
    assert len({row["seed"] for row in rows}) == 21
    assert reused_and_made(result.stdout) == (6, 15)
    # Rank 0 renders every other pending seed (8 of 15); rank 1 wrote the other 7.
    assert "pairs (rank 0 of 2)" in result.stderr
    assert re.search(r"8/8", result.stderr), result.stderr
