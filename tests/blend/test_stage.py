"""The blend stage: a loadable blended checkpoint with the blend recorded, and its preview."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from src.blend.__main__ import blend
from src.common.checkpoint import load_checkpoint, save_checkpoint
from src.common.errors import UserError
from src.common.fileio import sha256_file
from src.common.stage import CONFIG_DIR, execute_stage
from src.stylegan3.legacy import load_networks, to_checkpoint
from tests.conftest import run_module
from tests.stylegan3.test_legacy import write_official
from tests.stylegan3.tiny import write_tiny_checkpoint


@pytest.mark.slow
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
        assert torch.equal(
            blended[kind].state_dict()[weight], tuned_nets[kind].state_dict()[weight]
        )
    with Image.open(out / "preview.png") as preview:
        assert preview.width > 3 * 16 and preview.height > 4 * 16
    assert list((tmp_path / "runs" / "default" / "tensorboard" / "blend").glob("events.*"))


def compose_blend(root: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("blend", [f"paths.root_dir={root}", *overrides])


def test_the_seed_schedule_on_a_smaller_generator_says_what_fits(tmp_path: Path) -> None:
    base = write_tiny_checkpoint(tmp_path / "base.pt")
    cfg = compose_blend(tmp_path, f"blend.base={base}", f"blend.tuned={base}")
    message = (
        "blend.weights has 15 entries; this generator needs 4 (L0..L3) or 5 (input, L0..L3), "
        "or a mapping by layer name"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        execute_stage("blend", blend, cfg)


def test_official_pickle_base_blends_with_our_fine_tune(tmp_path: Path, official_stubs) -> None:
    pickle_path = tmp_path / "official.pkl"
    write_official(pickle_path, official_stubs)
    official = load_networks(pickle_path)
    with torch.no_grad():
        for kind in ("G", "G_ema"):
            for param in official[kind].parameters():
                param.add_(0.05)
    tuned = save_checkpoint(to_checkpoint(official, "fine-tune"), tmp_path / "tuned.pt")
    cfg = compose_blend(
        tmp_path,
        f"blend.base={pickle_path}",
        f"blend.tuned={tuned}",
        "blend.weights=0",
        "blend.preview_seeds=[1]",
    )
    execute_stage("blend", blend, cfg)
    blended = load_networks(Path(cfg.out_dir) / "network-blended.pt")
    for kind in ("G", "G_ema"):
        expected = load_networks(pickle_path)[kind].state_dict()
        for key, value in blended[kind].state_dict().items():
            assert torch.equal(value, expected[key]), key
    with Image.open(Path(cfg.out_dir) / "preview.png") as preview:
        # One row of base | blended | tuned, the 16-px samples enlarged to 64 px to be seen.
        assert preview.width >= 3 * 64 and 64 <= preview.height < 2 * 64 + 20
