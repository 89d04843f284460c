"""CycleGAN's networks: a ResNet or U-Net generator per direction, a PatchGAN per domain.

The U-Net, the PatchGAN, the norms and the init are pix2pix's (imported); the ResNet generator
is CycleGAN's own (:mod:`src.cyclegan.resnet`). ``build_generator`` is the ``cyclegan`` family
of :mod:`src.common.generators`, so an exported ``generator.pt`` loads in cartoonize and serving.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from src.common.errors import UserError
from src.cyclegan.resnet import PADDINGS, ResnetGenerator
from src.pix2pix import networks as pix2pix_networks

# What the reference calls its generators; resnet_<N>blocks works for any N.
RESNET_PATTERN = re.compile(r"resnet_(\d+)blocks")


def generator_config(
    netG: str = "resnet_9blocks",
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "instance",
    padding: str = "reflect",
    use_dropout: bool = False,
) -> dict[str, Any]:
    """A complete generator config (what ``generator.pt`` stores), defaults filled in.

    ``netG``: ``resnet_9blocks`` (256 px), ``resnet_6blocks`` (128 px), any ``resnet_<N>blocks``,
    or pix2pix's ``unet_256`` / ``unet_128``. ``padding`` applies to the residual blocks only.
    """
    if RESNET_PATTERN.fullmatch(netG) is None:
        pix2pix_networks.unet_num_downs(netG)
    if norm not in pix2pix_networks.NORMS:
        raise UserError(f"norm: unknown '{norm}'; use one of {', '.join(pix2pix_networks.NORMS)}")
    if padding not in PADDINGS:
        raise UserError(f"padding: unknown '{padding}'; use one of {', '.join(PADDINGS)}")
    return {
        "netG": str(netG),
        "input_nc": int(input_nc),
        "output_nc": int(output_nc),
        "ngf": int(ngf),
        "norm": str(norm),
        "padding": str(padding),
        "use_dropout": bool(use_dropout),
    }


def build_generator(config: dict[str, Any]) -> nn.Module:
    """The ``cyclegan`` generator family's builder: ResNet or (pix2pix's) U-Net from a config."""
    options = generator_config(**config)
    match = RESNET_PATTERN.fullmatch(options["netG"])
    if match is None:
        unet = {k: v for k, v in options.items() if k != "padding"}
        return pix2pix_networks.build_generator(unet)
    return ResnetGenerator(
        input_nc=options["input_nc"],
        output_nc=options["output_nc"],
        ngf=options["ngf"],
        n_blocks=int(match.group(1)),
        norm=options["norm"],
        padding=options["padding"],
        dropout=options["use_dropout"],
    )


def build_discriminator(
    netD: str = "basic",
    input_nc: int = 3,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
) -> nn.Module:
    """pix2pix's discriminators judging one domain's images (3 channels, not a pair)."""
    return pix2pix_networks.build_discriminator(netD, input_nc, ndf, n_layers, norm)
