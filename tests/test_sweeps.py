"""Sweep jobs get short, safe, stable folders listed in a readable index; a one-stage sweep reads
the earlier stages' outputs from its chain's run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from src.common.stage import SWEEP_INDEX, sweep_job_folder
from tests.conftest import TEST_CONFIGS, run_module


def test_job_folders_are_short_single_components_and_stable() -> None:
    many = ",".join(f"stage.parameter_{i}=/a/long/path/value/{i}" for i in range(11))
    folder = sweep_job_folder(many)
    assert len(folder) <= 49 and "/" not in folder
    assert folder == sweep_job_folder(many)
    assert folder != sweep_job_folder(many + "x")
    assert sweep_job_folder("seed=1").startswith("seed=1-")
    assert sweep_job_folder("x=[1,2]").startswith("x=_1,2-")


def index(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / SWEEP_INDEX).read_text(encoding="utf-8").splitlines()
    return {row["folder"]: row["overrides"] for row in map(json.loads, lines)}


def test_a_stage_sweep_writes_each_job_under_the_chains_run_folder(tmp_path: Path) -> None:
    result = run_module(
        "tests.stages.fake_a",
        "-m",
        f"--config-dir={TEST_CONFIGS}",
        f"paths.root_dir={tmp_path}",
        "fake_a.count=1,2",
        "+note=a/b/c",
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "default"
    jobs = index(run_dir)
    assert sorted(jobs.values()) == ["+note=a/b/c,fake_a.count=1", "+note=a/b/c,fake_a.count=2"]
    for folder, overrides in jobs.items():
        out_dir = run_dir / folder / "fake_a"
        count = int(overrides[-1])
        assert len(list((out_dir / "items").iterdir())) == count
        saved = yaml.safe_load((out_dir / "config.yaml").read_text(encoding="utf-8"))
        assert saved["paths"]["run_dir"] == str(run_dir), "inputs still resolve from the chain"


@pytest.mark.slow
def test_a_chain_sweep_gives_each_job_its_own_chain(tmp_path: Path) -> None:
    result = run_module(
        "src.pipeline",
        "-m",
        f"--config-dir={TEST_CONFIGS}",
        "+experiment=fakes",
        f"paths.root_dir={tmp_path}",
        "fake_b.count=1,2",
    )
    assert result.returncode == 0, result.stderr
    chains = tmp_path / "runs" / "chain"
    jobs = index(chains)
    assert sorted(jobs.values()) == ["fake_b.count=1", "fake_b.count=2"]
    for folder, overrides in jobs.items():
        items = chains / folder / "fake_b" / "items"
        assert len(list(items.iterdir())) == int(overrides[-1])
        assert (chains / folder / "fake_a" / "done.json").exists()
