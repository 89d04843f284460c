"""Pairs from StyleGAN2 generators: the same w and the same stored noise into both, so A and B
differ only by the weights; the two families are never paired."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.common.errors import UserError
from src.dataset_gen.pairs import PairRenderer
from src.stylegan3.generate import latents_for, to_pil
from src.stylegan3.legacy import load_networks
from tests.dataset_gen.conftest import run_in_process
from tests.stylegan3.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def sg2_nets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sg2")
    base = write_tiny_checkpoint(folder / "base.pt", seed=0, family="stylegan2")
    blended = write_tiny_checkpoint(folder / "b.pt", seed=0, tune_seed=2, family="stylegan2")
    return base, blended


def test_stage_renders_both_images_from_one_w_and_the_stored_noise(
    tmp_path: Path, sg2_nets
) -> None:
    out = run_in_process(tmp_path, sg2_nets, "dataset_gen.seeds=[4,1]", "dataset_gen.psi=0.6")
    base, blended = (load_networks(path)["G_ema"].eval() for path in sg2_nets)
    z = latents_for([4], base.z_dim).float()
    with torch.no_grad():
        ws = base.mapping(z, None, truncation_psi=0.6)
        expected = [to_pil(net.synthesis(ws, noise_mode="const"))[0] for net in (base, blended)]
    for folder, picture in zip("AB", expected, strict=True):
        with Image.open(out / folder / "000004.png") as written:
            assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(picture))
    assert not np.array_equal(np.asarray(expected[0]), np.asarray(expected[1]))
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(row["noise_mode"] == "const" for row in rows)
    # Random noise would change a render from one call to the next; const never does.
    again = PairRenderer(base, blended, psi=0.6)([4])[0]
    assert np.array_equal(np.asarray(again[1]), np.asarray(expected[1]))
    noisy = PairRenderer(base, blended, psi=0.6, noise_mode="random")
    assert not np.array_equal(np.asarray(noisy([4])[0][1]), np.asarray(noisy([4])[0][1]))


def test_families_and_transforms_are_checked(tmp_path: Path, sg2_nets) -> None:
    base = load_networks(sg2_nets[0])["G_ema"]
    sg3 = load_networks(write_tiny_checkpoint(tmp_path / "sg3.pt"))["G_ema"]
    with pytest.raises(UserError, match="the base is a stylegan2 generator, the blended a"):
        PairRenderer(base, sg3)
    with pytest.raises(UserError, match="translate/rotate need StyleGAN3 generators"):
        PairRenderer(base, base, rotate=5)


def test_stylegan3_recipes_do_not_record_a_noise_mode(tmp_path: Path, nets) -> None:
    """StyleGAN3 has no noise inputs: its pairs' recipe stays what it was before the setting."""
    out = run_in_process(tmp_path, nets, "dataset_gen.seeds=[0]")
    row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert "noise_mode" not in row and row["psi"] == 0.7
