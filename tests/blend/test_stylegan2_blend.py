"""Blending StyleGAN2 generators by blocks: Toonify's hard layer swap, schedules by block
name and resolution, the stage end to end, and refusing to mix the two families."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.blend.__main__ import blend
from src.blend.blending import blend_generators, resolve_weights, synthesis_layers
from src.common.checkpoint import load_checkpoint
from src.common.errors import UserError
from src.common.stage import CONFIG_DIR, execute_stage
from src.stylegan3.legacy import load_networks
from tests.stylegan3.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def sg2_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sg2")
    base = write_tiny_checkpoint(folder / "base.pt", seed=0, family="stylegan2")
    tuned = write_tiny_checkpoint(folder / "tuned.pt", seed=0, tune_seed=1, family="stylegan2")
    return base, tuned


def block_of(key: str) -> int | None:
    """Resolution of the synthesis block a state-dict key belongs to (None: mapping)."""
    parts = key.split(".")
    return int(parts[1][1:]) if parts[0] == "synthesis" else None


def test_layers_are_the_blocks_by_resolution(sg2_pair) -> None:
    layers = synthesis_layers(load_networks(sg2_pair[0])["G_ema"])
    assert [(layer.name, layer.resolution) for layer in layers] == [
        ("b4", 4),
        ("b8", 8),
        ("b16", 16),
    ]
    assert resolve_weights({"b4": 0.2, "default": 1}, layers) == [0.2, 1, 1]
    assert resolve_weights([0, 0.5, 1], layers) == [0, 0.5, 1]
    with pytest.raises(UserError, match=r"has 2 entries; this generator needs 3 \(b4..b16\)"):
        resolve_weights([0, 1], layers)


@pytest.mark.parametrize("switch_at", [8, 16])
def test_hard_swap_takes_tuned_blocks_from_switch_at_and_base_below(
    sg2_pair, switch_at: int
) -> None:
    base, tuned = (load_networks(path)["G_ema"] for path in sg2_pair)
    layers = synthesis_layers(base)
    weights = resolve_weights({"by": "resolution", "switch_at": switch_at, "width": 0}, layers)
    blended = blend_generators(base, tuned, weights).state_dict()
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    changed = 0
    for key, value in blended.items():
        res = block_of(key)
        source = tuned_state if res is not None and res >= switch_at else base_state
        assert torch.equal(value, source[key]), key
        changed += not torch.equal(base_state[key], tuned_state[key])
    assert changed > 10
    # ToRGB and the noise strengths of the swapped blocks come from the tuned network.
    torgb = f"synthesis.b{switch_at}.torgb.weight"
    assert torch.equal(blended[torgb], tuned_state[torgb])
    assert not torch.equal(blended[torgb], base_state[torgb])


def test_a_stylegan2_and_a_stylegan3_generator_are_not_blended(tmp_path: Path, sg2_pair) -> None:
    sg3 = write_tiny_checkpoint(tmp_path / "sg3.pt")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "blend",
            [f"paths.root_dir={tmp_path}", f"blend.base={sg2_pair[0]}", f"blend.tuned={sg3}"],
        )
    with pytest.raises(UserError, match="the base is a stylegan2 generator and the tuned one a"):
        execute_stage("blend", blend, cfg)


def test_stage_swaps_stylegan2_blocks(tmp_path: Path, sg2_pair) -> None:
    base, tuned = sg2_pair
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "blend",
            [
                f"paths.root_dir={tmp_path}",
                f"blend.base={base}",
                f"blend.tuned={tuned}",
                "~blend.weights",
                "+blend.weights={by: resolution, switch_at: 8, width: 0}",
                "blend.preview_seeds=[1]",
                "logger=none",
            ],
        )
    execute_stage("blend", blend, cfg)
    out = Path(cfg.out_dir) / "network-blended.pt"
    assert load_checkpoint(out)["blend"]["layers"] == ["b4", "b8", "b16"]
    assert load_checkpoint(out)["blend"]["weights"] == [0.0, 1.0, 1.0]
    blended = load_networks(out)
    tuned_nets, base_nets = load_networks(tuned), load_networks(base)
    for kind in ("G", "G_ema"):
        state = blended[kind].state_dict()
        key_hi, key_lo = "synthesis.b16.conv1.weight", "synthesis.b4.conv1.weight"
        assert torch.equal(state[key_hi], tuned_nets[kind].state_dict()[key_hi])
        assert torch.equal(state[key_lo], base_nets[kind].state_dict()[key_lo])
    assert (Path(cfg.out_dir) / "preview.png").is_file()


def test_toonify_sg2_experiment_swaps_at_32_px() -> None:
    from src.stylegan3.stylegan2 import Generator
    from tests.test_configs import compose_stage

    cfg = compose_stage("blend", ["+experiment=toonify_sg2_256"])
    assert str(cfg.blend.base).endswith("weights/stylegan2-ffhqu-256x256.pkl")
    layers = synthesis_layers(Generator(16, 0, 16, 256, 3, channel_base=2048, channel_max=8))
    listed = resolve_weights(list(cfg.blend.weights), layers)
    assert listed == resolve_weights({"by": "resolution", "switch_at": 32, "width": 0}, layers)
    assert listed == [0, 0, 0, 1, 1, 1, 1]
