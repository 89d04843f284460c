"""The blend stage: a loadable blended checkpoint with the blend recorded, and its preview."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from src.common.checkpoint import load_checkpoint
from src.common.fileio import sha256_file
from src.stylegan3.legacy import load_networks
from tests.conftest import run_module
from tests.stylegan3.tiny import write_tiny_checkpoint


def test_stage_writes_a_loadable_blend_and_a_preview(tmp_path: Path) -> None:
    base = write_tiny_checkpoint(tmp_path / "base.pt", seed=0)
    tuned = write_tiny_checkpoint(tmp_path / "tuned.pt", seed=0, tune_seed=1)
    result = run_module(
        "src.blend",
        f"paths.root_dir={tmp_path}",
        f"blend.base={base}",
        f"blend.tuned={tuned}",
        "blend.weights=[0.5,0.6,0.9,1]",
        "blend.preview_seeds=0-3",
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "default" / "blend"
    record = load_checkpoint(out / "network-blended.pt")["blend"]
    assert record["weights"] == [0.5, 0.5, 0.6, 0.9, 1.0]
    assert record["layers"][0] == "input" and record["layers"][1].startswith("L0_")
    assert record["tuned_sha256"] == sha256_file(tuned)
    blended = load_networks(out / "network-blended.pt")
    tuned_nets = load_networks(tuned)
    last = blended["G_ema"].synthesis.layer_names[-1]
    for kind in ("G", "G_ema"):
        weight = f"synthesis.{last}.weight"
        assert torch.equal(blended[kind].state_dict()[weight], tuned_nets[kind].state_dict()[weight])
    with Image.open(out / "preview.png") as preview:
        assert preview.width > 3 * 16 and preview.height > 4 * 16
    assert list((tmp_path / "runs" / "default" / "tensorboard" / "blend").glob("events.*"))


def test_wrong_list_length_is_one_line(tmp_path: Path) -> None:
    base = write_tiny_checkpoint(tmp_path / "base.pt")
    result = run_module(
        "src.blend", f"paths.root_dir={tmp_path}", f"blend.base={base}", f"blend.tuned={base}"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: blend.weights has 15 entries; this generator needs 4 (L0..L3) or 5 "
        "(input, L0..L3), or a mapping by layer name"
    )
