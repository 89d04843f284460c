"""pix2pix networks: the U-Net generator, the PatchGAN and 1x1 "pixel" discriminators, init.

Shapes and parameter counts follow the pix2pix paper's public PyTorch release, so its
generator files load into :class:`UnetGenerator` through :mod:`src.pix2pix.interop`. The U-Net
is written flat (a list of down blocks and a list of up blocks) rather than as the release's
nested blocks, so its weights have readable names: ``down.3.conv.weight``, ``up.0.conv.bias``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from src.common.errors import UserError

NORMS = ("batch", "instance", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
# Dropout sits in every 512-channel up block except the innermost: num_downs - 5 of them.
PLAIN_LEVELS = 5
KERNEL = 4


def norm_layer(norm: str, channels: int) -> nn.Module | None:
    """The release's norms: batch (affine, running stats), instance (neither) or none."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return None
    raise UserError(f"norm: unknown '{norm}'; use one of {', '.join(NORMS)}")


def unet_channels(num_downs: int, ngf: int) -> list[int]:
    """Channels after each down block: ngf, 2 ngf, 4 ngf, then 8 ngf down to the bottleneck."""
    return [ngf * min(2**level, 8) for level in range(num_downs)]


class UnetGenerator(nn.Module):
    """U-Net generator: ``num_downs`` 4x4 stride-2 convolutions down to 1x1 (at an input side
    of ``2 ** num_downs``), transposed convolutions back up, skip connections at every level.

    Down block ``i``: LeakyReLU(0.2) (not on the input), conv, norm (not on the outermost nor
    the innermost). Up block ``i``: ReLU, transposed conv, then norm and, for the
    ``num_downs - 5`` 512-channel blocks next to the innermost, dropout 0.5; the outermost ends
    in Tanh instead. Convolutions have a bias only with instance norm (the
    release's rule); the outermost up conv always has one.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
    ) -> None:
        super().__init__()
        if num_downs < PLAIN_LEVELS:
            raise UserError(f"num_downs must be at least {PLAIN_LEVELS} (got {num_downs})")
        self.num_downs = num_downs
        use_bias = norm == "instance"
        channels = unet_channels(num_downs, ngf)
        innermost = num_downs - 1
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for level, out_ch in enumerate(channels):
            in_ch = input_nc if level == 0 else channels[level - 1]
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if level > 0:
                layers["act"] = nn.LeakyReLU(0.2)
            layers["conv"] = nn.Conv2d(in_ch, out_ch, KERNEL, 2, 1, bias=use_bias)
            if 0 < level < innermost and (layer := norm_layer(norm, out_ch)) is not None:
                layers["norm"] = layer
            self.down.append(nn.Sequential(layers))
        for level, ch in enumerate(channels):
            up_in = ch if level == innermost else 2 * ch
            layers = OrderedDict(act=nn.ReLU())
            if level == 0:
                layers["conv"] = nn.ConvTranspose2d(up_in, output_nc, KERNEL, 2, 1, bias=True)
                layers["tanh"] = nn.Tanh()
            else:
                up_out = channels[level - 1]
                layers["conv"] = nn.ConvTranspose2d(up_in, up_out, KERNEL, 2, 1, bias=use_bias)
                if (layer := norm_layer(norm, up_out)) is not None:
                    layers["norm"] = layer
                if use_dropout and PLAIN_LEVELS - 1 <= level < innermost:
                    layers["dropout"] = nn.Dropout(0.5)
            self.up.append(nn.Sequential(layers))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Translate ``N x input_nc x H x W`` images (H, W multiples of ``2 ** num_downs``)."""
        step = 2**self.num_downs
        if images.shape[-1] % step or images.shape[-2] % step:
            raise ValueError(
                f"U-Net with {self.num_downs} downsamplings needs sides that are multiples of "
                f"{step}, got {tuple(images.shape[-2:])}"
            )
        skips = []
        hidden = images
        for block in self.down:
            hidden = block(hidden)
            skips.append(hidden)
        hidden = self.up[-1](skips[-1])
        for level in range(self.num_downs - 2, -1, -1):
            hidden = self.up[level](torch.cat([skips[level], hidden], dim=1))
        return hidden


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, one stride-1 conv, a 1-channel stride-1 conv.

    With ``n_layers=3`` each output cell sees a 70x70 patch and a 256 px input gives 30x30
    logits. Channels 64, 128, 256, 512 (capped at 8 ndf), LeakyReLU 0.2, no norm on the first.
    Layer indices in ``model`` match the release, so its discriminator files load unchanged.
    """

    def __init__(
        self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        use_bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, KERNEL, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for index in range(1, n_layers + 1):
            previous, mult = mult, min(2**index, 8)
            stride = 2 if index < n_layers else 1
            layers.append(nn.Conv2d(ndf * previous, ndf * mult, KERNEL, stride, 1, bias=use_bias))
            if (layer := norm_layer(norm, ndf * mult)) is not None:
                layers.append(layer)
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv2d(ndf * mult, 1, KERNEL, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Real/fake logits, one per patch: ``N x 1 x h x w``."""
        return self.model(images)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): judges every pixel's colour on its own."""

    def __init__(self, input_nc: int = 6, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        use_bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, ndf * 2, 1, bias=use_bias),
        ]
        if (layer := norm_layer(norm, ndf * 2)) is not None:
            layers.append(layer)
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(ndf * 2, 1, 1, bias=use_bias)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Real/fake logits per pixel: ``N x 1 x H x W``."""
        return self.net(images)


def init_weights(module: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """The release's init: conv weights N(0, gain) (or xavier / kaiming / orthogonal), biases 0;
    batch-norm weights N(1, gain), biases 0. Returns ``module``."""
    if init_type not in INIT_TYPES:
        raise UserError(f"init_type: unknown '{init_type}'; use one of {', '.join(INIT_TYPES)}")
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if init_type == "normal":
                nn.init.normal_(layer.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(layer.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, gain)
            nn.init.zeros_(layer.bias)
    return module


def unet_num_downs(net_g: str) -> int:
    """``unet_256`` -> 8, ``unet_128`` -> 7: the U-Net that maps a side of N down to 1x1."""
    match = re.fullmatch(r"unet_(\d+)", net_g)
    size = int(match.group(1)) if match else 0
    if size < 2**PLAIN_LEVELS or size & (size - 1):
        raise UserError(
            f"netG: '{net_g}' is not a U-Net name; use unet_<side> with a power-of-two side "
            "of at least 32, e.g. unet_256 or unet_128"
        )
    return size.bit_length() - 1


def generator_config(
    netG: str = "unet_256",  # the release's option name
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "batch",
    use_dropout: bool = True,
) -> dict[str, Any]:
    """A complete generator config (what ``generator.pt`` stores), defaults filled in."""
    unet_num_downs(netG)
    return {
        "netG": netG,
        "input_nc": int(input_nc),
        "output_nc": int(output_nc),
        "ngf": int(ngf),
        "norm": str(norm),
        "use_dropout": bool(use_dropout),
    }


def build_generator(config: dict[str, Any]) -> UnetGenerator:
    """The ``pix2pix`` generator family's builder: a U-Net from a :func:`generator_config`."""
    options = generator_config(**config)
    return UnetGenerator(
        input_nc=options["input_nc"],
        output_nc=options["output_nc"],
        num_downs=unet_num_downs(options["netG"]),
        ngf=options["ngf"],
        norm=options["norm"],
        use_dropout=options["use_dropout"],
    )


def build_discriminator(
    netD: str = "basic",  # the release's option name
    input_nc: int = 6,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "batch",
) -> nn.Module:
    """``basic`` (70x70 PatchGAN), ``n_layers`` (PatchGAN of that depth) or ``pixel`` (1x1)."""
    if netD == "basic":
        return NLayerDiscriminator(input_nc, ndf, 3, norm)
    if netD == "n_layers":
        return NLayerDiscriminator(input_nc, ndf, n_layers, norm)
    if netD == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise UserError(f"netD: unknown '{netD}'; use basic, n_layers or pixel")


def count_parameters(module: nn.Module) -> int:
    """Number of learnable parameters (buffers such as running means excluded)."""
    return sum(p.numel() for p in module.parameters())
