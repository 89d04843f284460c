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
from tests.cyclegan.reference_layout import FlatResnetGenerator
from tests.pix2pix.reference_layout import NestedUnet
from tests.reference_files import (
    SERIALIZATIONS,
    randomise,
    reference_state_dict,
    save_like_reference,
)

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


def release_resnet(
    n_blocks: int, norm: str = "instance", padding: str = "reflect", dropout: bool = False
) -> FlatResnetGenerator:
    """The reference's ResNet generator with random weights (and batch-norm running stats)."""
    net = randomise(FlatResnetGenerator(4, n_blocks, norm, padding, dropout), seed=n_blocks)
    return net.eval()


def load_like_the_reference(net: torch.nn.Module, path: Path) -> None:
    """``BaseModel.load_networks``: torch.load, drop ``_metadata``, load strictly."""
    state = torch.load(path, weights_only=True)
    del state._metadata
    net.load_state_dict(state)


RESNET_OPTIONS = [
    ("instance", "reflect", False),
    ("batch", "zero", True),
    ("none", "replicate", False),
]


@pytest.mark.parametrize(("norm", "padding", "dropout"), RESNET_OPTIONS)
def test_key_mapping_covers_the_reference_modules_keys(
    norm: str, padding: str, dropout: bool
) -> None:
    config = {"netG": "resnet_3blocks", "norm": norm, "padding": padding, "use_dropout": dropout}
    generator = build_generator({**config, **TINY})
    reference = release_resnet(3, norm, padding, dropout).state_dict()
    mapping = key_mapping(generator)
    assert sorted(mapping.values()) == sorted(reference)
    ours = generator.state_dict()
    assert all(ours[k].shape == reference[v].shape for k, v in mapping.items())
    again = to_reference(generator, from_reference(generator, reference))
    assert again.keys() == reference.keys()
    assert all(torch.equal(again[k], reference[k]) for k in reference)


@pytest.mark.parametrize("serialization", SERIALIZATIONS)
@pytest.mark.parametrize(("norm", "padding", "dropout"), RESNET_OPTIONS)
def test_reference_file_written_as_the_reference_writes_it(
    tmp_path: Path, serialization: str, norm: str, padding: str, dropout: bool
) -> None:
    release = release_resnet(2, norm, padding, dropout)
    path = save_like_reference(
        reference_state_dict(release), tmp_path / "latest_net_G_A.pth", serialization
    )
    control = FlatResnetGenerator(4, 2, norm, padding, dropout).eval()
    load_like_the_reference(control, path)
    config = {"netG": "resnet_2blocks", "norm": norm, "padding": padding, "use_dropout": dropout}
    ours = load_reference_generator(build_generator({**config, **TINY}), path).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = release(images)
        assert torch.equal(control(images), expected)
        assert torch.allclose(ours(images), expected, atol=1e-6)


def test_unet_reference_file_uses_the_pix2pix_mapping(tmp_path: Path) -> None:
    torch.manual_seed(3)
    release = NestedUnet(5, 4, norm="instance").eval()
    path = save_like_reference(
        reference_state_dict(release), tmp_path / "latest_net_G_B.pth", "legacy"
    )
    ours = load_reference_generator(build_generator({"netG": "unet_32", **TINY}), path).eval()
    assert "model.model.0.weight" in key_mapping(ours).values()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(ours(images), release(images), atol=1e-6)


def test_our_files_load_in_the_reference_and_old_files_in_ours(tmp_path: Path) -> None:
    generator = randomise(build_generator({"netG": "resnet_2blocks", **TINY}), seed=4).eval()
    path = save_reference_generator(generator, tmp_path / "latest_net_G_A.pth")
    control = FlatResnetGenerator(4, 2).eval()
    control.load_state_dict(torch.load(path, weights_only=True))
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(control(images), generator(images), atol=1e-6)
    # Files saved before PyTorch 0.4 carry instance-norm running stats: they are ignored.
    release = release_resnet(2)
    state = reference_state_dict(release)
    for name, module in release.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
    old = save_like_reference(state, tmp_path / "old_net_G_A.pth", "legacy")
    fresh = load_reference_generator(build_generator({"netG": "resnet_2blocks", **TINY}), old)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(images), release(images), atol=1e-6)
    # A DataParallel net saved by other code (the reference itself unwraps it first).
    wrapped = {f"module.{k}": v for k, v in reference_state_dict(release).items()}
    assert from_reference(fresh, wrapped).keys() == fresh.state_dict().keys()
    other = build_generator({"netG": "resnet_3blocks", **TINY})
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: model\.12"):
        load_reference_generator(other, old)


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
