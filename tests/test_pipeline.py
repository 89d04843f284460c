"""The chain runner end to end: skip, force, rerun after an interrupted stage, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIGS, run_module


def run_chain(root: Path, *overrides: str, env: dict[str, str] | None = None):
    """The runner over the two fake stages, writing under ``root``."""
    return run_module(
        "src.pipeline",
        f"--config-dir={TEST_CONFIGS}",
        "+experiment=fakes",
        f"paths.root_dir={root}",
        *overrides,
        env=env,
    )


def stage_dir(root: Path, stage: str) -> Path:
    return root / "runs" / "chain" / stage


def done(root: Path, stage: str) -> dict | None:
    path = stage_dir(root, stage) / "done.json"
    return json.loads(path.read_text()) if path.exists() else None


def attempt(root: Path, stage: str) -> dict:
    return json.loads((stage_dir(root, stage) / "attempt.json").read_text())


def items(root: Path, stage: str) -> list[str]:
    return sorted(p.name for p in (stage_dir(root, stage) / "items").iterdir())


@pytest.mark.slow
def test_interrupted_stage_resumes_then_finished_stages_are_skipped(tmp_path: Path) -> None:
    failed = run_chain(tmp_path, env={"FAIL_FAKE_A_AT": "3"})
    assert failed.returncode != 0
    assert "fake_a failed" in failed.stderr
    assert items(tmp_path, "fake_a") == ["0.txt", "1.txt", "2.txt"]
    assert done(tmp_path, "fake_a") is None
    assert (stage_dir(tmp_path, "fake_a") / "started.json").exists()
    assert not stage_dir(tmp_path, "fake_b").exists()

    resumed = run_chain(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert attempt(tmp_path, "fake_a") | {"random": None} == {
        "resume": True,
        "written": [3, 4],
        "random": None,
    }
    assert items(tmp_path, "fake_a") == [f"{i}.txt" for i in range(5)]
    first_a, first_b = done(tmp_path, "fake_a"), done(tmp_path, "fake_b")
    assert first_a["resumed"] is True
    assert first_b["upstream"] == {"fake_a": first_a["run_id"]}
    assert (stage_dir(tmp_path, "fake_a") / "config.yaml").exists()
    assert not (stage_dir(tmp_path, "fake_a") / "started.json").exists()

    again = run_chain(tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("skipped") >= 2
    assert done(tmp_path, "fake_a") == first_a
    assert done(tmp_path, "fake_b") == first_b


@pytest.mark.slow
def test_force_reruns_a_stage_and_the_stages_after_it(tmp_path: Path) -> None:
    assert run_chain(tmp_path).returncode == 0
    before_a, before_b = done(tmp_path, "fake_a"), done(tmp_path, "fake_b")

    forced = run_chain(tmp_path, "pipeline.force=[fake_a]")
    assert forced.returncode == 0, forced.stderr
    after_a, after_b = done(tmp_path, "fake_a"), done(tmp_path, "fake_b")
    assert after_a["run_id"] != before_a["run_id"]
    assert attempt(tmp_path, "fake_a")["written"] == [0, 1, 2, 3, 4]
    assert after_b["run_id"] != before_b["run_id"]
    assert after_b["upstream"] == {"fake_a": after_a["run_id"]}


@pytest.mark.slow
def test_a_stage_override_reruns_only_that_stage(tmp_path: Path) -> None:
    assert run_chain(tmp_path).returncode == 0
    before_a = done(tmp_path, "fake_a")

    changed = run_chain(tmp_path, "fake_b.count=3")
    assert changed.returncode == 0, changed.stderr
    assert done(tmp_path, "fake_a") == before_a
    assert items(tmp_path, "fake_b") == ["0.txt", "1.txt", "2.txt"]
    assert attempt(tmp_path, "fake_b")["resume"] is False


def test_force_of_an_unknown_stage_is_one_line(tmp_path: Path) -> None:
    result = run_chain(tmp_path, "pipeline.force=[nope]")
    assert result.returncode == 2
    assert "pipeline.force names ['nope']" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_stage_without_a_config_is_one_line(tmp_path: Path) -> None:
    result = run_chain(tmp_path, "pipeline.stages=[fake_a,nope]")
    assert result.returncode == 2
    assert "pipeline.stages names 'nope', which has no config nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stage_dir(tmp_path, "fake_a").exists(), "nothing runs before the chain is valid"


def test_user_error_in_a_stage_is_one_line_and_stops_the_chain(tmp_path: Path) -> None:
    result = run_chain(tmp_path, "fake_a.count=-1")
    assert result.returncode == 1
    assert "error: fake_a.count is -1; set it to 0 or more" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stage_dir(tmp_path, "fake_b").exists()


def test_seed_zero_is_honoured(tmp_path: Path) -> None:
    common = (f"--config-dir={TEST_CONFIGS}", f"paths.root_dir={tmp_path}")
    values = []
    for run in ("x", "y"):
        result = run_module("tests.stages.fake_a", *common, f"run_name={run}", "seed=0")
        assert result.returncode == 0, result.stderr
        values.append(json.loads((tmp_path / "runs" / run / "fake_a" / "attempt.json").read_text()))
    import random

    random.seed(0)
    assert values[0]["random"] == values[1]["random"] == random.random()


@pytest.mark.slow
def test_one_module_runs_as_two_stages_with_their_own_params(tmp_path: Path) -> None:
    result = run_chain(tmp_path, "experiment=fakes_alias", "fake_a_again.count=3")
    assert result.returncode == 0, result.stderr
    assert items(tmp_path, "fake_a") == [f"{i}.txt" for i in range(5)]
    assert items(tmp_path, "fake_a_again") == ["0.txt", "1.txt", "2.txt"]
    assert done(tmp_path, "fake_a_again")["stage"] == "fake_a_again"
    assert done(tmp_path, "fake_a_again")["upstream"] == {
        "fake_a": done(tmp_path, "fake_a")["run_id"]
    }
