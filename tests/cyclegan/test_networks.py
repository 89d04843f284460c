"""CycleGAN networks: reference parameter counts, shapes, options and the reference key mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError
from src.common.errors import UserError
from src.common.generators import load_generator, save_generator
from src.cyclegan.interop import (
    from_reference,
    key_mapping,
    load_reference_generator,
    save_reference_generator,
    to_reference,
)
from src.cyclegan.networks import build_discriminator, build_generator
from src.cyclegan.resnet import ResnetGenerator
from src.pix2pix.networks import count_parameters

TINY = {"ngf": 4}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"netG": "resnet_9blocks", "norm": "instance"}, 11_378_179),
        ({"netG": "resnet_6blocks", "norm": "instance"}, 7_837_699),
        ({"netG": "resnet_9blocks", "norm": "batch"}, 11_383_427),
    ],
)
def test_generator_parameter_counts_equal_the_reference(config: dict, expected: int) -> None:
    assert count_parameters(build_generator(config)) == expected


def test_patchgan_with_instance_norm_has_the_reference_count() -> None:
    assert count_parameters(build_discriminator(input_nc=3, norm="instance")) == 2_764_737


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("netG", ["resnet_2blocks", "unet_32"])
def test_generators_keep_the_image_shape_and_range(netG: str, padding: str) -> None:
    generator = build_generator({"netG": netG, "padding": padding, **TINY})
    out = generator(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert out.abs().max() <= 1


def test_dropout_and_padding_options_change_the_blocks() -> None:
    plain = build_generator({"netG": "resnet_1blocks", **TINY})
    with_dropout = build_generator({"netG": "resnet_1blocks", "use_dropout": True, **TINY})
    zero = build_generator({"netG": "resnet_1blocks", "padding": "zero", **TINY})
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    assert any(isinstance(m, nn.Dropout) for m in with_dropout.modules())
    assert any(isinstance(m, nn.ReflectionPad2d) for m in plain.blocks.modules())
    assert not any(isinstance(m, nn.ReflectionPad2d) for m in zero.blocks.modules())


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="padding: unknown 'mirror'"):
        build_generator({"padding": "mirror"})
    with pytest.raises(UserError, match="netG"):
        build_generator({"netG": "resnet_nine"})


def reference_resnet_keys(n_blocks: int, norm: str, padding: str, dropout: bool) -> list[str]:
    """The state-dict keys of the reference ResnetGenerator (its flat ``model`` Sequential),
    written out from its layer list rather than from our network."""
    # The reference's use_bias: convs followed by a norm have a bias only with instance norm.
    conv_keys = ["weight", "bias"] if norm == "instance" else ["weight"]
    norm_keys = {
        "instance": [],
        "none": [],
        "batch": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
    }[norm]
    keys = []

    def layer(index: int, names: list[str], inner: str = "") -> None:
        keys.extend(f"model.{index}{inner}.{name}" for name in names)

    layer(1, conv_keys)
    layer(2, norm_keys)
    for conv_index in (4, 7):
        layer(conv_index, conv_keys)
        layer(conv_index + 1, norm_keys)
    pad = 0 if padding == "zero" else 1
    first_conv, second_conv = pad, pad + 3 + (1 if dropout else 0) + pad
    for block in range(n_blocks):
        for conv in (first_conv, second_conv):
            layer(10 + block, conv_keys, f".conv_block.{conv}")
            layer(10 + block, norm_keys, f".conv_block.{conv + 1}")
    up = 10 + n_blocks
    for conv_index in (up, up + 3):
        layer(conv_index, conv_keys)
        layer(conv_index + 1, norm_keys)
    layer(up + 7, ["weight", "bias"])
    return keys


@pytest.mark.parametrize(
    ("norm", "padding", "dropout"),
    [("instance", "reflect", False), ("batch", "zero", True), ("none", "replicate", False)],
)
def test_key_mapping_round_trip_in_the_reference_layout(
    norm: str, padding: str, dropout: bool
) -> None:
    config = {"netG": "resnet_3blocks", "norm": norm, "padding": padding, "use_dropout": dropout}
    generator = build_generator({**config, **TINY})
    assert sorted(key_mapping(generator).values()) == sorted(
        reference_resnet_keys(3, norm, padding, dropout)
    )
    torch.manual_seed(0)
    reference = {k: torch.randn_like(v.float()) for k, v in to_reference(generator).items()}
    ours = from_reference(generator, reference)
    again = to_reference(generator, ours)
    assert again.keys() == reference.keys()
    assert all(torch.equal(again[k], reference[k]) for k in reference)
    generator.load_state_dict(ours)
    assert torch.equal(to_reference(generator)["model.1.weight"], reference["model.1.weight"])


def test_unet_generators_use_pix2pix_mapping() -> None:
    generator = build_generator({"netG": "unet_32", **TINY})
    assert "model.model.0.weight" in key_mapping(generator).values()
    state = to_reference(generator)
    assert from_reference(generator, state).keys() == generator.state_dict().keys()


def test_reference_file_loads_strips_wrappers_and_names_misfits(tmp_path: Path) -> None:
    generator = build_generator({"netG": "resnet_2blocks", **TINY})
    path = save_reference_generator(generator, tmp_path / "latest_net_G_A.pth")
    fresh = build_generator({"netG": "resnet_2blocks", **TINY})
    load_reference_generator(fresh, path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), generator.state_dict().values(), strict=True)
    )
    wrapped = {f"module.{k}": v for k, v in torch.load(path, weights_only=True).items()}
    # Files saved before PyTorch 0.4 carry instance-norm running stats: they are ignored.
    wrapped["module.model.2.running_mean"] = torch.zeros(4)
    assert from_reference(fresh, wrapped).keys() == fresh.state_dict().keys()
    other = build_generator({"netG": "resnet_3blocks", **TINY})
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: model\.12"):
        load_reference_generator(other, path)


def test_exported_generator_loads_through_the_family_registry(tmp_path: Path) -> None:
    config = {"netG": "resnet_2blocks", "ngf": 4, "padding": "zero"}
    generator = build_generator(config).eval()
    path = save_generator(
        tmp_path / "g.pt", generator, family="cyclegan", config=config, image_size=32
    )
    bundle = load_generator(path)
    assert isinstance(bundle.module, ResnetGenerator)
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(bundle.module(images), generator(images))
