"""Exported generators for the serving tests: identity (paste-back) and a tiny conv net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common import generators
from src.common.generators import IdentityGenerator, save_generator
from tests.serve.tiny import build_tiny

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


@pytest.fixture
def identity_generator(tmp_path: Path) -> Path:
    """An identity ``generator.pt`` working at 256 px."""
    return save_generator(
        tmp_path / "identity.pt", IdentityGenerator(), family="identity", config={}, image_size=256
    )


@pytest.fixture
def tiny_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny conv ``generator.pt`` at 64 px, its family registered for this test."""
    monkeypatch.setitem(generators.FAMILIES, "tiny_test", "tests.serve.tiny:build_tiny")
    torch.manual_seed(0)
    return save_generator(
        tmp_path / "tiny.pt",
        build_tiny({"width": 8}),
        family="tiny_test",
        config={"width": 8},
        image_size=64,
    )


@pytest.fixture
def unet_generator(tmp_path: Path) -> Path:
    """A small pix2pix U-Net ``generator.pt`` at 64 px (instance norm, as the smoke chain's)."""
    from src.pix2pix.networks import build_generator

    config = {"netG": "unet_64", "ngf": 8, "norm": "instance"}
    torch.manual_seed(0)
    module = build_generator(config).eval()
    return save_generator(
        tmp_path / "unet.pt", module, family="pix2pix", config=config, image_size=64
    )


@pytest.fixture
def photo2cartoon_generator(tmp_path: Path) -> Path:
    """A tiny photo2cartoon (hourglass) ``generator.pt`` at 64 px."""
    from src.photo2cartoon.networks import Generator

    config = {"kind": "photo2cartoon", "ngf": 4, "img_size": 64, "light": True, "n_res": 1}
    torch.manual_seed(0)
    return save_generator(
        tmp_path / "p2c.pt",
        Generator(**config),
        family="photo2cartoon",
        config=config,
        image_size=64,
    )
