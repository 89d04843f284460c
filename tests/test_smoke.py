"""The smoke chain (what `make demo` runs) end to end in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_module


@pytest.mark.slow
def test_smoke_chain_runs_then_skips(tmp_path: Path) -> None:
    first = run_module("src.pipeline", "+experiment=smoke", f"paths.root_dir={tmp_path}")
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs" / "smoke"
    assert f"tensorboard --logdir {run_dir}/tensorboard" in first.stderr.replace("\n", "")
    toyfaces = run_dir / "toyfaces"
    record = json.loads((toyfaces / "done.json").read_text())
    assert {"trainA", "paired", "landmarks.json", "contact_sheet.png"} <= set(record["outputs"])
    assert len(list((toyfaces / "paired" / "A").glob("*.png"))) == 96
    saved = yaml.safe_load((toyfaces / "config.yaml").read_text())
    assert saved["toyfaces"]["size"] == 64
    assert list((run_dir / "tensorboard" / "toyfaces").glob("events.out.tfevents.*"))

    second = run_module("src.pipeline", "+experiment=smoke", f"paths.root_dir={tmp_path}")
    assert second.returncode == 0, second.stderr
    assert "toyfaces: finished" in second.stderr and "skipped" in second.stderr
    assert json.loads((toyfaces / "done.json").read_text()) == record
