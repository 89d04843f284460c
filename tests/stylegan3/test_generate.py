"""Image generation: seed parsing, latents identical to NVIDIA's tool, transforms, outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from src.common.checkpoint import save_checkpoint
from src.common.errors import UserError
from src.common.stage import CONFIG_DIR
from src.stylegan3.generate import generate, input_transform, latents_for, parse_seeds
from src.stylegan3.legacy import to_checkpoint
from src.stylegan3.networks import Discriminator, Generator
from tests.stylegan3.tiny import D_KWARGS, G_KWARGS


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [
        (5, [5]),
        ("0-3", [0, 1, 2, 3]),
        ("1,5,9", [1, 5, 9]),
        ("0-2,10", [0, 1, 2, 10]),
        ([4, 2], [4, 2]),
    ],
)
def test_parse_seeds(spec, seeds: list[int]) -> None:
    assert parse_seeds(spec) == seeds


def test_bad_seed_spec_is_a_user_error() -> None:
    with pytest.raises(UserError, match="seeds: cannot read 'a-b'"):
        parse_seeds("a-b")


def test_latents_match_randomstate_per_seed_whatever_the_batch() -> None:
    batch = latents_for([3, 7], 512)
    assert torch.equal(batch[1], torch.from_numpy(np.random.RandomState(7).randn(512)))
    assert torch.equal(latents_for([7], 512)[0], batch[1])


def test_input_transform_is_the_inverse_of_the_requested_motion() -> None:
    shift = input_transform([2, -3], 0, 64)
    assert torch.allclose(shift, torch.tensor([[1, 0, -2 / 64], [0, 1, 3 / 64], [0, 0, 1.0]]))
    turn = input_transform([0, 0], 90, 64)
    assert torch.allclose(turn[:2, :2], torch.tensor([[0.0, -1], [1, 0]]), atol=1e-6)


def test_rotation_follows_gen_images_make_transform() -> None:
    """NVIDIA's gen_images.py: m = [[c, s, tx], [-s, c, ty], [0, 0, 1]], the generator gets
    inv(m), with c = cos(angle / 360 * 2 pi) and s = sin(...) of --rotate in degrees."""
    angle = 15 / 360.0 * np.pi * 2
    c, s = np.cos(angle), np.sin(angle)
    official = np.linalg.inv(np.array([[c, s, 0.25], [-s, c, -0.5], [0, 0, 1]]))
    ours = input_transform([16, -32], 15, 64)
    np.testing.assert_allclose(ours.numpy(), official, rtol=0, atol=1e-7)


def small_checkpoint(path: Path) -> Path:
    """A converted-format checkpoint holding a tiny StyleGAN3-T generator and discriminator."""
    torch.manual_seed(0)
    generator = Generator(**G_KWARGS)
    networks = {
        "G": generator,
        "G_ema": generator,
        "D": Discriminator(**D_KWARGS),
        "configs": {"G": G_KWARGS, "G_ema": G_KWARGS, "D": D_KWARGS},
    }
    return save_checkpoint(to_checkpoint(networks, "test"), path)


def run_generate(ckpt: Path, outdir: Path, **changes) -> Path:
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "stylegan3"), version_base="1.3"):
        cfg = compose("generate", [f"ckpt={ckpt}", f"outdir={outdir}", "seeds=0-4"])
    cfg.batch_size = 2
    for key, value in changes.items():
        cfg[key] = value
    return generate(cfg)


def test_generate_writes_a_png_per_seed_and_a_grid_deterministically(tmp_path: Path) -> None:
    ckpt = small_checkpoint(tmp_path / "g.ckpt")
    first = run_generate(ckpt, tmp_path / "a")
    second = run_generate(ckpt, tmp_path / "b", batch_size=5)
    names = sorted(p.name for p in first.iterdir())
    assert names == ["grid.png", *(f"seed{s:04d}.png" for s in range(5))]
    for name in names[1:]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert Image.open(first / "seed0000.png").size == (16, 16)


def test_translate_moves_the_picture_by_whole_pixels(tmp_path: Path) -> None:
    ckpt = small_checkpoint(tmp_path / "g.ckpt")
    still = np.asarray(Image.open(run_generate(ckpt, tmp_path / "a") / "seed0001.png"), float)
    moved_dir = run_generate(ckpt, tmp_path / "b", translate=[2, 0])
    moved = np.asarray(Image.open(moved_dir / "seed0001.png"), float)
    shifted_error = np.abs(moved[:, 2:] - still[:, :-2]).mean()
    unshifted_error = np.abs(moved[:, 2:] - still[:, 2:]).mean()
    assert shifted_error < unshifted_error / 2


def test_unknown_network_is_a_user_error(tmp_path: Path) -> None:
    ckpt = small_checkpoint(tmp_path / "g.ckpt")
    with pytest.raises(UserError, match=r"network: .* has no 'G_nope'"):
        run_generate(ckpt, tmp_path / "a", network="G_nope")
