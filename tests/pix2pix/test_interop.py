"""The release's generator files (nested key layout) load into our U-Net and back, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.checkpoint import CheckpointMismatchError
from src.pix2pix.interop import (
    from_reference,
    key_mapping,
    load_reference_generator,
    save_reference_generator,
    to_reference,
)
from src.pix2pix.networks import build_generator, init_weights
from tests.pix2pix.reference_layout import NestedUnet


def reference_state(num_downs: int, ngf: int) -> dict[str, torch.Tensor]:
    """A release-layout state dict with distinct random values, running stats included."""
    torch.manual_seed(1)
    net = NestedUnet(num_downs, ngf)
    init_weights(net)
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 2**num_downs, 2**num_downs))
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(("net_g", "num_downs"), [("unet_64", 6), ("unet_256", 8)])
def test_key_mapping_covers_every_key_and_shape(net_g: str, num_downs: int) -> None:
    ours = build_generator({"netG": net_g, "ngf": 2})
    reference = reference_state(num_downs, 2)
    mapping = key_mapping(ours)
    assert sorted(mapping.values()) == sorted(reference)
    for our_key, reference_key in mapping.items():
        assert ours.state_dict()[our_key].shape == reference[reference_key].shape
    assert mapping["down.0.conv.weight"] == "model.model.0.weight"
    assert mapping["up.0.conv.bias"] == "model.model.3.bias"
    assert mapping["down.2.conv.weight"] == "model.model.1.model.3.model.1.weight"


def test_round_trip_reference_to_ours_and_back_is_exact() -> None:
    reference = reference_state(6, 4)
    ours = build_generator({"netG": "unet_64", "ngf": 4})
    ours.load_state_dict(from_reference(ours, reference))
    back = to_reference(ours)
    assert back.keys() == reference.keys()
    assert all(torch.equal(back[k], reference[k]) for k in reference)


def test_loaded_weights_compute_what_the_release_computes() -> None:
    nested = NestedUnet(6, 4).eval()
    nested.load_state_dict(reference_state(6, 4))
    ours = build_generator({"netG": "unet_64", "ngf": 4}).eval()
    ours.load_state_dict(from_reference(ours, nested.state_dict()))
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(images), nested(images), atol=1e-6)


def test_file_round_trip_and_old_files(tmp_path: Path) -> None:
    reference = reference_state(6, 4)
    old = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    wrapped = {f"module.{k}": v for k, v in old.items()}
    torch.save(wrapped, tmp_path / "latest_net_G.pth")
    ours = load_reference_generator(
        build_generator({"netG": "unet_64", "ngf": 4}), tmp_path / "latest_net_G.pth"
    )
    running_var = reference["model.model.1.model.2.running_var"]
    assert torch.equal(ours.down[1].norm.running_var, running_var)
    save_reference_generator(ours, tmp_path / "ours_net_G.pth")
    saved = torch.load(tmp_path / "ours_net_G.pth", weights_only=True)
    assert all(torch.equal(saved[k], old[k]) for k in old)


def test_mismatches_are_listed() -> None:
    reference = reference_state(6, 4)
    ours = build_generator({"netG": "unet_64", "ngf": 4})
    broken = dict(reference)
    del broken["model.model.0.weight"]
    broken["model.model.3.bias"] = torch.zeros(5)
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        from_reference(ours, broken, "latest_net_G.pth")
    message = str(info.value)
    assert "latest_net_G.pth" in message and "model.model.0.weight" in message
    assert "extra.weight" in message and "model.model.3.bias (5,) vs (3,)" in message
    with pytest.raises(CheckpointMismatchError, match="missing"):
        from_reference(build_generator({"netG": "unet_128", "ngf": 4}), reference)
