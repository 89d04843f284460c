"""The committed real-format NVIDIA pickle (tests/data/stylegan3/official-t16.pkl, written by
``python -m tests.stylegan3.official``) in the entry points a user gives it to."""

from __future__ import annotations

import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.stylegan3.convert import main as convert_main
from src.stylegan3.generate import latents_for, to_pil
from src.stylegan3.legacy import load_networks
from tests.dataset_gen.conftest import run_in_process
from tests.stylegan3.official import FIXTURE, FIXTURE_OUTPUTS, FIXTURE_SEEDS
from tests.stylegan3.test_generate import run_generate

# Outputs were recorded on the machine that wrote the fixture; another CPU may round differently.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FIXTURE_OUTPUTS, weights_only=True)


def assert_outputs(networks: dict, expected: dict) -> None:
    z = latents_for(FIXTURE_SEEDS, networks["G_ema"].z_dim).float()
    with torch.no_grad():
        images = networks["G_ema"].eval()(z, None)
        logits = networks["D"].eval()(torch.nn.functional.avg_pool2d(images, 2), None)
    torch.testing.assert_close(images, expected["images"], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=TOLERANCE)


def test_the_fixture_is_in_nvidias_format() -> None:
    globals_used = set()
    strings = set()
    for op, arg, _ in pickletools.genops(FIXTURE.read_bytes()):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE") and len(arg) < 64:
            strings.add(arg)
        if op.name == "STACK_GLOBAL" or op.name == "GLOBAL":
            globals_used.add(arg)
    assert {"torch_utils.persistence", "_reconstruct_persistent_obj"} <= strings
    assert {"module_src", "class_name", "Generator", "Discriminator", "AugmentPipe"} <= strings
    assert not any("networks_stylegan3." in s for s in strings), "class names are bare"


def test_load_networks_gives_the_recorded_outputs(expected: dict) -> None:
    assert_outputs(load_networks(FIXTURE), expected)


def test_convert_keeps_the_outputs(tmp_path: Path, expected: dict) -> None:
    convert_main([f"in={FIXTURE}", f"out={tmp_path / 'ours.ckpt'}"])
    assert_outputs(load_networks(tmp_path / "ours.ckpt"), expected)


def test_generate_draws_the_recorded_images(tmp_path: Path, expected: dict) -> None:
    out = run_generate(FIXTURE, tmp_path / "out", seeds=list(FIXTURE_SEEDS))
    for seed, picture in zip(FIXTURE_SEEDS, to_pil(expected["images"]), strict=True):
        written = np.asarray(Image.open(out / f"seed{seed:04d}.png"), dtype=int)
        assert np.abs(written - np.asarray(picture, dtype=int)).max() <= 1


def test_dataset_gen_renders_pairs_from_the_pickle(tmp_path: Path, expected: dict) -> None:
    out = run_in_process(tmp_path, (FIXTURE, FIXTURE), "dataset_gen.seeds=[1]", "dataset_gen.psi=1")
    pixels = np.asarray(Image.open(out / "A" / "000001.png"), dtype=int)
    assert np.abs(pixels - np.asarray(to_pil(expected["images"][1:2])[0], dtype=int)).max() <= 1
