"""The release's generator files (nested key layout) load into our U-Net and back, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.checkpoint import CheckpointMismatchError, file_kind
from src.pix2pix.interop import (
    from_reference,
    key_mapping,
    load_reference_generator,
    save_reference_generator,
    to_reference,
)
from src.pix2pix.networks import build_generator, init_weights
from tests.pix2pix.reference_layout import NestedUnet
from tests.reference_files import SERIALIZATIONS, reference_state_dict, save_like_reference


def reference_state(num_downs: int, ngf: int) -> dict[str, torch.Tensor]:
    """A release-layout state dict with distinct random values, running stats included."""
    torch.manual_seed(1)
    net = NestedUnet(num_downs, ngf)
    init_weights(net)
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 2**num_downs, 2**num_downs))
    return net.state_dict()


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


def release_generator(num_downs: int, ngf: int, norm: str) -> NestedUnet:
    """The release's U-Net with random weights and (batch norm) trained running stats."""
    torch.manual_seed(2)
    net = NestedUnet(num_downs, ngf, norm=norm)
    init_weights(net)
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 2**num_downs, 2**num_downs))
    return net.eval()


def load_like_the_release(net: NestedUnet, path: Path) -> None:
    """``BaseModel.load_networks``: torch.load, drop ``_metadata``, load strictly."""
    state = torch.load(path, weights_only=True)
    del state._metadata
    net.load_state_dict(state)


@pytest.mark.parametrize("serialization", SERIALIZATIONS)
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_release_file_written_as_the_release_writes_it(
    tmp_path: Path, serialization: str, norm: str
) -> None:
    release = release_generator(6, 4, norm)
    path = save_like_reference(
        reference_state_dict(release), tmp_path / "latest_net_G.pth", serialization
    )
    assert file_kind(path) == ("torch-legacy" if serialization == "legacy" else "zip")
    control = NestedUnet(6, 4, norm=norm).eval()
    load_like_the_release(control, path)
    ours = load_reference_generator(
        build_generator({"netG": "unet_64", "ngf": 4, "norm": norm}), path
    ).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = release(images)
        assert torch.equal(control(images), expected)
        assert torch.allclose(ours(images), expected, atol=1e-6)


def test_files_of_old_pytorch_versions(tmp_path: Path) -> None:
    """Before 0.4.1 batch norm had no ``num_batches_tracked``; before 0.4 instance norm saved
    running stats (which the release's loader drops): both load."""
    batch = release_generator(6, 4, "batch")
    state = reference_state_dict(batch)
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]
    path = save_like_reference(state, tmp_path / "latest_net_G.pth", "legacy")
    ours = load_reference_generator(build_generator({"netG": "unet_64", "ngf": 4}), path)
    running_var = state["model.model.1.model.2.running_var"]
    assert torch.equal(ours.down[1].norm.running_var, running_var)
    instance = release_generator(6, 4, "instance")
    state = reference_state_dict(instance)
    for name, module in instance.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
    path = save_like_reference(state, tmp_path / "old_net_G.pth", "legacy")
    config = {"netG": "unet_64", "ngf": 4, "norm": "instance"}
    ours = load_reference_generator(build_generator(config), path).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(images), instance(images), atol=1e-6)


def test_our_files_load_in_the_release_and_wrapped_files_in_ours(tmp_path: Path) -> None:
    reference = reference_state(6, 4)
    ours = build_generator({"netG": "unet_64", "ngf": 4})
    ours.load_state_dict(from_reference(ours, reference))
    path = save_reference_generator(ours, tmp_path / "ours_net_G.pth")
    control = NestedUnet(6, 4)
    control.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(v, reference[k]) for k, v in control.state_dict().items())
    # A DataParallel net saved by other code (the release itself unwraps it first).
    wrapped = {f"module.{k}": v for k, v in reference.items()}
    torch.save(wrapped, tmp_path / "wrapped_net_G.pth")
    loaded = load_reference_generator(
        build_generator({"netG": "unet_64", "ngf": 4}), tmp_path / "wrapped_net_G.pth"
    )
    assert torch.equal(
        loaded.down[1].norm.running_var, reference["model.model.1.model.2.running_var"]
    )


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
