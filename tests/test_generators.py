"""The exported generator format: round trip, family dispatch, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.checkpoint import save_checkpoint
from src.common.errors import UserError
from src.common.generators import (
    FAMILIES,
    IdentityGenerator,
    load_generator,
    save_generator,
)


def test_round_trip_keeps_config_size_range_and_meta(tmp_path: Path) -> None:
    path = save_generator(
        tmp_path / "generator.pt",
        IdentityGenerator(),
        family="identity",
        config={},
        image_size=64,
        value_range=(0.0, 1.0),
        meta={"stage": "test"},
    )
    bundle = load_generator(path)
    assert isinstance(bundle.module, IdentityGenerator)
    assert not bundle.module.training
    assert (bundle.family, bundle.image_size, bundle.value_range) == ("identity", 64, (0.0, 1.0))
    assert bundle.meta == {"stage": "test"}
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(bundle.module(images), images)


def test_builder_weights_are_loaded_and_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(FAMILIES, "conv", f"{__name__}:build_conv")
    conv = build_conv({"channels": 3})
    path = save_generator(
        tmp_path / "g.pt", conv, family="conv", config={"channels": 3}, image_size=8
    )
    loaded = load_generator(path).module
    assert torch.equal(loaded.weight, conv.weight)

    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("bias")
    save_checkpoint(payload, tmp_path / "broken.pt")
    with pytest.raises(UserError, match="bias"):
        load_generator(tmp_path / "broken.pt")


def build_conv(config: dict) -> torch.nn.Module:
    return torch.nn.Conv2d(config["channels"], 3, 1)


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    save_checkpoint({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"other\.pt is not an exported generator"):
        load_generator(tmp_path / "other.pt")
    with pytest.raises(UserError, match="unknown generator family 'nope'"):
        save_generator(
            tmp_path / "x.pt", IdentityGenerator(), family="nope", config={}, image_size=8
        )
