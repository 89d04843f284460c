"""Released-weights interop: reference key names, exact outputs after loading, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.common.checkpoint import CheckpointMismatchError
from src.photo2cartoon.interop import (
    discriminator_from_reference,
    from_reference_state_dict,
    infer_generator_config,
    load_reference_checkpoint,
    to_reference_state_dict,
)
from src.photo2cartoon.networks import Discriminator, Generator

# Key names of the released files (U-GAT-IT's ResnetGenerator / Discriminator and
# photo2cartoon's hourglass generator), as they appear in their state dicts.
UGATIT_KEYS = {
    "DownBlock.1.weight",
    "DownBlock.5.weight",
    "DownBlock.9.weight",
    "DownBlock.12.conv_block.1.weight",
    "DownBlock.15.conv_block.5.weight",
    "gap_fc.weight",
    "gmp_fc.weight",
    "conv1x1.weight",
    "conv1x1.bias",
    "FC.0.weight",
    "FC.2.weight",
    "gamma.weight",
    "beta.weight",
    "UpBlock1_1.conv1.weight",
    "UpBlock1_4.norm2.rho",
    "UpBlock2.2.weight",
    "UpBlock2.3.rho",
    "UpBlock2.8.gamma",
    "UpBlock2.11.weight",
}
PHOTO2CARTOON_KEYS = {
    "ConvBlock1.1.weight",
    "HourGlass1.HG.0.ConvBlock1_1.ConvBlock1.3.weight",
    "HourGlass1.HG.0.ConvBlock4_2.ConvBlock4.2.weight",
    "HourGlass2.HG.0.ConvBlock5.ConvBlock3.3.weight",
    "HourGlass3.HG.0.ConvBlock9.ConvBlock2.3.weight",
    "HourGlass3.HG.1.ConvBlock1.3.weight",
    "HourGlass3.HG.2.weight",
    "HourGlass3.Conv1.bias",
    "HourGlass3.Conv3.weight",
    "HourGlass4.Conv1.weight",
    "DownBlock1.1.weight",
    "DownBlock2.1.weight",
    "EncodeBlock4.conv_block.5.weight",
    "gap_fc.bias",
    "FC.2.bias",
    "DecodeBlock1.norm1.norm.rho",
    "DecodeBlock2.norm2.w_gamma",
    "DecodeBlock3.norm1.c_gamma.2.weight",
    "DecodeBlock4.norm2.s_beta.bias",
    "UpBlock1.2.weight",
    "UpBlock2.3.rho",
    "ConvBlock2.1.weight",
}
DISCRIMINATOR_KEYS = {
    "model.1.weight_orig",
    "model.1.weight_u",
    "model.1.bias",
    "model.16.weight_v",
    "gap_fc.weight_orig",
    "gmp_fc.weight_u",
    "conv1x1.weight",
    "conv.weight_orig",
}


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (norm blends included, kept in [0, 1]) so nothing is trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = torch.rand(tensor.shape, generator=generator)
            if not name.endswith(("rho", "w_gamma", "w_beta")):
                values = (values - 0.5) * 0.4
            tensor.copy_(values)
    return module.eval()


def test_reference_names_of_the_released_layouts() -> None:
    ugatit = to_reference_state_dict(Generator("ugatit", ngf=4, img_size=32))
    assert set(ugatit) >= UGATIT_KEYS
    # 3 convs + 4 blocks x 2 + 4 CAM + 2 MLP + gamma, beta + 4 blocks x 4 + 2 x 4 up + head
    assert len(ugatit) == 44
    photo2cartoon = to_reference_state_dict(Generator("photo2cartoon", ngf=8, img_size=32))
    assert set(photo2cartoon) >= PHOTO2CARTOON_KEYS
    assert "HourGlass4.Conv2.weight" not in photo2cartoon  # the last hourglass has no residual
    critic = to_reference_state_dict(Discriminator(3, ndf=4, n_layers=7))
    assert set(critic) >= DISCRIMINATOR_KEYS


def _reference_ugatit_light(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """U-GAT-IT's light generator written out with functional ops on reference-named weights,
    independent of our modules, to check the key mapping against the reference's own order."""

    def conv(x: torch.Tensor, key: str, pad: int, stride: int = 1) -> torch.Tensor:
        return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), state[key], stride=stride)

    def iln(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        inst = (x - x.mean((2, 3), keepdim=True)) / (x.var((2, 3), keepdim=True) + 1e-5).sqrt()
        layer = (x - x.mean((1, 2, 3), keepdim=True)) / (
            x.var((1, 2, 3), keepdim=True) + 1e-5
        ).sqrt()
        return rho * inst + (1 - rho) * layer

    x = F.relu(F.instance_norm(conv(x, "DownBlock.1.weight", 3)))
    x = F.relu(F.instance_norm(conv(x, "DownBlock.5.weight", 1, 2)))
    x = F.relu(F.instance_norm(conv(x, "DownBlock.9.weight", 1, 2)))
    blocks = sorted({int(k.split(".")[1]) for k in state if ".conv_block." in k})
    for index in blocks:
        prefix = f"DownBlock.{index}.conv_block"
        y = F.relu(F.instance_norm(conv(x, f"{prefix}.1.weight", 1)))
        x = x + F.instance_norm(conv(y, f"{prefix}.5.weight", 1))
    gap_w, gmp_w = state["gap_fc.weight"], state["gmp_fc.weight"]
    x = torch.cat((x * gap_w[0, :, None, None], x * gmp_w[0, :, None, None]), 1)
    x = F.relu(F.conv2d(x, state["conv1x1.weight"], state["conv1x1.bias"]))
    style = x.mean((2, 3))
    style = F.relu(F.linear(F.relu(F.linear(style, state["FC.0.weight"])), state["FC.2.weight"]))
    gamma, beta = F.linear(style, state["gamma.weight"]), F.linear(style, state["beta.weight"])
    for i in range(1, len(blocks) + 1):
        p = f"UpBlock1_{i}"
        y = iln(conv(x, f"{p}.conv1.weight", 1), state[f"{p}.norm1.rho"])
        y = F.relu(y * gamma[:, :, None, None] + beta[:, :, None, None])
        y = iln(conv(y, f"{p}.conv2.weight", 1), state[f"{p}.norm2.rho"])
        x = x + y * gamma[:, :, None, None] + beta[:, :, None, None]
    for conv_index in (2, 7):
        x = conv(
            F.interpolate(x, scale_factor=2.0, mode="nearest"), f"UpBlock2.{conv_index}.weight", 1
        )
        n = f"UpBlock2.{conv_index + 1}"
        x = F.relu(iln(x, state[f"{n}.rho"]) * state[f"{n}.gamma"] + state[f"{n}.beta"])
    return torch.tanh(conv(x, "UpBlock2.11.weight", 3))


def test_ugatit_mapping_matches_an_independent_reference_forward() -> None:
    ours = _randomise(Generator("ugatit", ngf=4, img_size=32, n_res=2), seed=0)
    state = to_reference_state_dict(ours)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = _reference_ugatit_light(state, images)
        assert torch.allclose(ours(images), expected, atol=1e-5)


def _release(path: Path, kind: str) -> dict[str, torch.nn.Module]:
    """Write a six-network file in the released layout; return the networks it was made from."""
    networks = {
        "genA2B": _randomise(Generator(kind, ngf=8, img_size=32, light=False, n_res=2), 1),
        "genB2A": _randomise(Generator(kind, ngf=8, img_size=32, light=False, n_res=2), 2),
        "disGA": _randomise(Discriminator(3, ndf=4, n_layers=5), 3),
        "disGB": _randomise(Discriminator(3, ndf=4, n_layers=5), 4),
        "disLA": _randomise(Discriminator(3, ndf=4, n_layers=4), 5),
        "disLB": _randomise(Discriminator(3, ndf=4, n_layers=4), 6),
    }
    torch.save({name: to_reference_state_dict(net) for name, net in networks.items()}, path)
    return networks


@pytest.mark.parametrize("kind", ["ugatit", "photo2cartoon"])
def test_released_file_loads_with_exact_outputs(tmp_path: Path, kind: str) -> None:
    original = _release(tmp_path / "release.pt", kind)
    loaded = load_reference_checkpoint(tmp_path / "release.pt")
    assert set(loaded) == set(original)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for name, network in loaded.items():
            network.eval()
            ours, theirs = network(images), original[name](images)
            outputs = (ours, theirs) if name.startswith("gen") else (ours[0], theirs[0])
            assert torch.equal(*outputs), name
    assert loaded["genA2B"].kind == kind and not loaded["genA2B"].light


def test_data_parallel_prefix_is_accepted() -> None:
    critic = _randomise(Discriminator(3, ndf=4, n_layers=4), 7)
    state = {f"module.{k}": v for k, v in to_reference_state_dict(critic).items()}
    renamed = from_reference_state_dict(critic, state)
    assert all(torch.equal(renamed[k], v) for k, v in critic.state_dict().items())
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(discriminator_from_reference(state).eval()(images)[0], critic(images)[0])


def test_generator_settings_are_read_off_the_weights() -> None:
    state = to_reference_state_dict(
        Generator("photo2cartoon", ngf=8, img_size=64, light=False, n_res=3)
    )
    assert infer_generator_config(state) == {
        "kind": "photo2cartoon",
        "ngf": 8,
        "img_size": 64,
        "light": False,
        "n_res": 3,
        "in_channels": 3,
        "out_channels": 3,
    }


def test_mismatches_name_the_keys() -> None:
    generator = Generator("ugatit", ngf=4, img_size=32, n_res=2)
    state = to_reference_state_dict(generator)
    del state["UpBlock2.11.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"head\.1\.weight"):
        from_reference_state_dict(generator, state)
    state = to_reference_state_dict(generator)
    state["HourGlass1.Conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"HourGlass1\.Conv1\.weight"):
        from_reference_state_dict(generator, state)


def test_a_file_of_something_else_is_a_user_error(tmp_path: Path) -> None:
    from src.common.errors import UserError

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="genA2B"):
        load_reference_checkpoint(tmp_path / "other.pt")
