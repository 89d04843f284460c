"""pix2pix networks: the release's parameter counts, shapes, biases, dropout and init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.common.errors import UserError
from src.pix2pix.networks import (
    UnetGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    init_weights,
    unet_num_downs,
)


@pytest.mark.parametrize(
    ("net_g", "expected"), [("unet_256", 54_413_955), ("unet_128", 41_828_995)]
)
def test_generator_parameter_counts_match_the_release(net_g: str, expected: int) -> None:
    assert count_parameters(build_generator({"netG": net_g, "norm": "batch"})) == expected


def test_patchgan_parameter_count_and_70px_patches() -> None:
    assert count_parameters(build_discriminator(input_nc=6, norm="batch")) == 2_768_705
    tiny = build_discriminator(input_nc=6, ndf=4)
    assert tiny(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)


def test_pixel_and_n_layer_discriminators() -> None:
    pixel = build_discriminator("pixel", input_nc=6, ndf=8)
    assert pixel(torch.zeros(2, 6, 16, 16)).shape == (2, 1, 16, 16)
    deeper = build_discriminator("n_layers", input_nc=6, ndf=4, n_layers=4)
    assert deeper(torch.zeros(1, 6, 64, 64)).shape == (1, 1, 2, 2)


@pytest.mark.parametrize(("net_g", "dropouts"), [("unet_256", 3), ("unet_128", 2), ("unet_32", 0)])
def test_dropout_only_in_the_inner_512_channel_up_blocks(net_g: str, dropouts: int) -> None:
    net = build_generator({"netG": net_g, "ngf": 4})
    layers = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(layers) == dropouts
    assert not any(isinstance(m, nn.Dropout) for m in net.up[-1].modules())


def test_biases_follow_the_norm() -> None:
    batch = build_generator({"netG": "unet_32", "ngf": 4, "norm": "batch"})
    with_bias = [n for n, _ in batch.named_parameters() if n.endswith("conv.bias")]
    assert with_bias == ["up.0.conv.bias"]
    instance = build_generator({"netG": "unet_32", "ngf": 4, "norm": "instance"})
    convs = [m for m in instance.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert all(conv.bias is not None for conv in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in instance.modules())


def test_no_norm_on_outermost_and_innermost_down_blocks() -> None:
    net = build_generator({"netG": "unet_64", "ngf": 4})
    assert [hasattr(block, "norm") for block in net.down] == [False, True, True, True, True, False]
    assert [hasattr(block, "norm") for block in net.up] == [False] + [True] * 5


def test_generator_maps_images_to_tanh_range_and_checks_sizes() -> None:
    net = build_generator({"netG": "unet_32", "ngf": 4}).eval()
    out = net(torch.randn(2, 3, 64, 32) * 10)
    assert out.shape == (2, 3, 64, 32) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 48, 48))


def test_unet_names() -> None:
    assert (unet_num_downs("unet_256"), unet_num_downs("unet_128")) == (8, 7)
    for bad in ("resnet_9blocks", "unet_100", "unet_16"):
        with pytest.raises(UserError, match="netG"):
            unet_num_downs(bad)


def test_init_normal_and_options() -> None:
    torch.manual_seed(0)
    net = init_weights(UnetGenerator(num_downs=5, ngf=16), "normal", 0.02)
    conv = net.down[2].conv.weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    norm = net.down[2].norm
    assert abs(norm.weight.mean().item() - 1) < 0.01 and norm.bias.abs().max() == 0
    assert net.up[0].conv.bias.abs().max() == 0
    for kind in ("xavier", "kaiming", "orthogonal"):
        init_weights(net, kind)
    with pytest.raises(UserError, match="init_type"):
        init_weights(net, "uniform")
