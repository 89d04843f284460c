"""The GPU acceptance command: its CPU dry run (every part, the table and gpu_check.json, without
the CUDA build and tests) and its failure isolation and time budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src import gpu_check
from src.gpu_check import GpuCheck, PartResult, Row, Settings, main

PARTS = [
    "build",
    "pytest_cuda",
    "ops",
    "sg3_generator",
    "sg3_train",
    "pix2pix",
    "cyclegan",
    "photo2cartoon",
]


@pytest.mark.slow
def test_cpu_dry_run_prints_the_table_and_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "gpu_check.json"
    assert main(["--cpu-dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["ok"] and report["device"].startswith("CPU")
    parts = {part["name"]: part for part in report["parts"]}
    assert list(parts) == PARTS
    for name in ("build", "pytest_cuda"):
        assert parts[name]["status"] == "skipped" and "dry run" in parts[name]["detail"]
    for name in PARTS[2:]:
        part = parts[name]
        assert part["status"] == "ok", part
        assert part["rows"] and all(row["value"] > 0 for row in part["rows"]), part
    ops = [row["item"] for row in parts["ops"]["rows"]]
    assert any("filtered_lrelu" in item and "float16 fwd+bwd" in item for item in ops)
    assert any(item.startswith("bias_act") for item in ops)
    assert any(item.startswith("upfirdn2d") for item in ops)
    steps = {row["item"].split()[0]: row for row in parts["sg3_train"]["rows"]}
    assert steps["stylegan3-t"]["unit"] == "s/kimg"
    assert "A100 49.81" in steps["stylegan3-t"]["reference"]
    assert "A100 56.73" in steps["stylegan3-r"]["reference"]
    assert "batch_gpu 4" in steps["stylegan3-r"]["item"]
    printed = capsys.readouterr().out
    assert "gpu_check on CPU" in printed and "s/kimg" in printed and "49.81" in printed


def dry_settings() -> Settings:
    return Settings.for_run(dry_run=True, sg3_steps=1)


def test_a_failing_part_is_reported_and_the_rest_still_run() -> None:
    check = GpuCheck(dry_settings(), budget_s=60)

    def broken(result: PartResult) -> None:
        raise RuntimeError("kernel exploded\nsecond line")

    check.run("broken", broken)
    check.run("fine", lambda result: result.rows.append(Row("x", 1.0, "s")))
    report = check.report()
    broken_part, fine_part = report["parts"]
    assert broken_part["status"] == "failed"
    assert broken_part["detail"] == "RuntimeError: kernel exploded"
    assert fine_part["status"] == "ok" and fine_part["rows"][0]["value"] == 1.0
    assert not report["ok"]


def test_parts_past_the_time_budget_are_skipped() -> None:
    check = GpuCheck(dry_settings(), budget_s=0)
    ran: list[str] = []
    check.run("late", lambda result: ran.append("late"))
    assert ran == []
    assert check.parts[0].status == "skipped" and check.parts[0].detail == "time budget spent"
    assert check.report()["ok"]


def test_without_a_gpu_the_real_run_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert main(["--out", str(tmp_path / "g.json")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: gpu_check: no CUDA device is visible; run with --cpu-dry-run on a CPU"
    )
    assert not (tmp_path / "g.json").exists()
