"""The parameter layouts of U-GAT-IT, photo2cartoon and InsightFace's MobileFaceNet, rebuilt from
their public architecture descriptions for the loader tests (independent of ``src.photo2cartoon``).

Only module names, parameter shapes and biases matter for a ``state_dict``; the generators and
critics therefore have no ``forward`` (the tests run independent functional forwards on their
weights), MobileFaceNet has one because it is short.

* U-GAT-IT (znxlwm/UGATIT-pytorch ``networks.py``) ``ResnetGenerator(input_nc, output_nc, ngf,
  n_blocks, img_size, light)``: ``DownBlock`` Sequential (pad, 7x7 conv, IN, ReLU; twice pad,
  3x3 stride-2 conv, IN, ReLU; ``n_blocks`` ``ResnetBlock``s with a ``conv_block`` of pad, conv,
  IN, ReLU, pad, conv, IN), bias-free ``gap_fc`` / ``gmp_fc``, ``conv1x1`` (bias), ``FC`` (two
  bias-free Linear + ReLU; the first flattens the whole ``img_size/4`` map unless ``light``),
  bias-free ``gamma`` / ``beta``, ``UpBlock1_<i>`` (``conv1``, ``norm1.rho``, ``conv2``,
  ``norm2.rho``) and ``UpBlock2`` (twice upsample, pad, conv, ILN(rho, gamma, beta), ReLU; pad,
  7x7 conv, Tanh). Every conv but ``conv1x1`` is bias-free; InstanceNorm2d is not affine.
* photo2cartoon (minivision-ai/photo2cartoon ``models/networks.py``) ``ResnetGenerator(ngf,
  img_size, light)``: ``ConvBlock1``, ``HourGlass1``/``2``, ``DownBlock1``/``2``,
  ``EncodeBlock1..4``, CAM layers *with* biases, ``FC`` (Linear layers with biases),
  ``DecodeBlock1..4`` (Soft-AdaLIN: ``norm.rho``, ``w_gamma``, ``w_beta``, ``c_gamma`` /
  ``c_beta`` two-Linear MLPs, ``s_gamma`` / ``s_beta``), ``UpBlock1``/``2`` (upsample, pad,
  conv, LIN, ReLU), ``HourGlass3``/``4`` (the last without ``Conv2`` / ``Conv3``) and
  ``ConvBlock2`` (pad, 3 -> 3 7x7 conv, Tanh). The reference always has 4 encoder and decoder
  blocks; ``n_blocks`` only keeps tests small.
* Both critics: ``Discriminator(input_nc, ndf, n_layers)`` with old-style
  ``nn.utils.spectral_norm`` (``weight_orig``, ``weight_u``, ``weight_v``).
* MobileFaceNet (TreB1eN/InsightFace_Pytorch ``model.py``, copied into photo2cartoon's
  ``models/mobilefacenet.py``): ``Conv_block`` (conv, bn, prelu), ``Linear_block`` (conv, bn),
  ``Depth_Wise`` (conv, conv_dw, project), ``Residual`` (model), then ``linear`` and ``bn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- shared pieces


def _pad_conv(cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> list:
    """Reflection pad then an unpadded conv, as the references write their convs."""
    return [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride, bias=bias)]


def _conv_in_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list:
    return [*_pad_conv(cin, cout, kernel, stride), nn.InstanceNorm2d(cout), nn.ReLU(True)]


class ResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        layers = [*_conv_in_relu(dim, dim, 3), *_pad_conv(dim, dim, 3), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)


class Rho(nn.Module):
    """adaILN / adaLIN: only the IN-LN blend ``rho`` is a parameter."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, dim, 1, 1), 0.9))


class RhoGammaBeta(nn.Module):
    """ILN / LIN: the blend and an affine transform of their own."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))


def _upsample_block(cin: int, cout: int) -> list:
    return [nn.Upsample(scale_factor=2), *_pad_conv(cin, cout, 3), RhoGammaBeta(cout), nn.ReLU()]


class Discriminator(nn.Module):
    """The U-GAT-IT / photo2cartoon critic (both repositories define the same one)."""

    def __init__(self, input_nc: int, ndf: int, n_layers: int) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        channels = [input_nc] + [ndf * 2**i for i in range(n_layers - 1)]
        layers: list[nn.Module] = []
        for i in range(n_layers - 1):
            stride = 1 if i == n_layers - 2 else 2
            conv = nn.Conv2d(channels[i], channels[i + 1], 4, stride, bias=True)
            layers += [nn.ReflectionPad2d(1), sn(conv), nn.LeakyReLU(0.2, True)]
        width = channels[-1]
        self.gap_fc = sn(nn.Linear(width, 1, bias=False))
        self.gmp_fc = sn(nn.Linear(width, 1, bias=False))
        self.conv1x1 = nn.Conv2d(width * 2, width, 1, bias=True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = sn(nn.Conv2d(width, 1, 4, bias=False))
        self.model = nn.Sequential(*layers)


def settle_spectral_vectors(module: nn.Module) -> nn.Module:
    """``weight_u`` one power step from ``weight_v`` for every spectral-normed layer, so sigma
    is positive (as after training) after :func:`tests.reference_files.randomise`."""
    with torch.no_grad():
        for layer in module.modules():
            if hasattr(layer, "weight_orig"):
                layer.weight_v.copy_(F.normalize(layer.weight_v, dim=0))
                matrix = layer.weight_orig.flatten(1)
                layer.weight_u.copy_(F.normalize(matrix @ layer.weight_v, dim=0))
    return module


# ---------------------------------------------------------------- U-GAT-IT


class AdaILNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1, self.conv1 = _pad_conv(dim, dim, 3)
        self.norm1 = Rho(dim)
        self.pad2, self.conv2 = _pad_conv(dim, dim, 3)
        self.norm2 = Rho(dim)


class UgatitGenerator(nn.Module):
    def __init__(
        self, ngf: int, n_blocks: int, img_size: int, light: bool, input_nc: int = 3
    ) -> None:
        super().__init__()
        width = ngf * 4
        down = _conv_in_relu(input_nc, ngf, 7)
        down += _conv_in_relu(ngf, ngf * 2, 3, 2) + _conv_in_relu(ngf * 2, width, 3, 2)
        down += [ResnetBlock(width) for _ in range(n_blocks)]
        self.gap_fc = nn.Linear(width, 1, bias=False)
        self.gmp_fc = nn.Linear(width, 1, bias=False)
        self.conv1x1 = nn.Conv2d(width * 2, width, 1, bias=True)
        mlp_in = width if light else (img_size // 4) ** 2 * width
        self.FC = nn.Sequential(
            nn.Linear(mlp_in, width, bias=False),
            nn.ReLU(True),
            nn.Linear(width, width, bias=False),
            nn.ReLU(True),
        )
        self.gamma = nn.Linear(width, width, bias=False)
        self.beta = nn.Linear(width, width, bias=False)
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", AdaILNBlock(width))
        up = _upsample_block(width, ngf * 2) + _upsample_block(ngf * 2, ngf)
        up += [*_pad_conv(ngf, 3, 7), nn.Tanh()]
        self.DownBlock = nn.Sequential(*down)
        self.UpBlock2 = nn.Sequential(*up)


# ---------------------------------------------------------------- photo2cartoon


class PreActConvBlock(nn.Module):
    """The hourglass's ``ConvBlock``: IN, ReLU, (pad,) conv in four branches, all bias-free."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()

        def branch(cin: int, cout: int, kernel: int) -> nn.Sequential:
            padding = [nn.ReflectionPad2d(1)] if kernel == 3 else []
            conv = nn.Conv2d(cin, cout, kernel, bias=False)
            return nn.Sequential(nn.InstanceNorm2d(cin), nn.ReLU(True), *padding, conv)

        self.ConvBlock1 = branch(dim_in, dim_out // 2, 3)
        self.ConvBlock2 = branch(dim_out // 2, dim_out // 4, 3)
        self.ConvBlock3 = branch(dim_out // 4, dim_out // 4, 3)
        self.ConvBlock4 = branch(dim_in, dim_out, 1)


class HourGlassBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        for level in range(1, 5):
            setattr(self, f"ConvBlock{level}_1", PreActConvBlock(dim, dim))
            setattr(self, f"ConvBlock{level}_2", PreActConvBlock(dim, dim))
        for index in range(5, 10):
            setattr(self, f"ConvBlock{index}", PreActConvBlock(dim, dim))


class HourGlass(nn.Module):
    def __init__(self, dim: int, use_res: bool = True) -> None:
        super().__init__()
        self.HG = nn.Sequential(
            HourGlassBlock(dim),
            PreActConvBlock(dim, dim),
            nn.Conv2d(dim, dim, 1, bias=False),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
        )
        self.Conv1 = nn.Conv2d(dim, 3, 1)
        if use_res:
            self.Conv2 = nn.Conv2d(dim, dim, 1)
            self.Conv3 = nn.Conv2d(3, dim, 1)


class SoftAdaLIN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = Rho(dim)
        self.w_gamma = nn.Parameter(torch.zeros(1, dim))
        self.w_beta = nn.Parameter(torch.zeros(1, dim))

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(True), nn.Linear(dim, dim))

        self.c_gamma, self.c_beta = mlp(), mlp()
        self.s_gamma, self.s_beta = nn.Linear(dim, dim), nn.Linear(dim, dim)


class SoftAdaLINBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1, self.conv1 = _pad_conv(dim, dim, 3)
        self.norm1 = SoftAdaLIN(dim)
        self.pad2, self.conv2 = _pad_conv(dim, dim, 3)
        self.norm2 = SoftAdaLIN(dim)


class Photo2CartoonGenerator(nn.Module):
    def __init__(self, ngf: int, img_size: int, light: bool, n_blocks: int = 4) -> None:
        super().__init__()
        width = ngf * 4
        self.ConvBlock1 = nn.Sequential(*_conv_in_relu(3, ngf, 7))
        self.HourGlass1, self.HourGlass2 = HourGlass(ngf), HourGlass(ngf)
        self.DownBlock1 = nn.Sequential(*_conv_in_relu(ngf, ngf * 2, 3, 2))
        self.DownBlock2 = nn.Sequential(*_conv_in_relu(ngf * 2, width, 3, 2))
        for i in range(n_blocks):
            setattr(self, f"EncodeBlock{i + 1}", ResnetBlock(width))
        self.gap_fc = nn.Linear(width, 1)
        self.gmp_fc = nn.Linear(width, 1)
        self.conv1x1 = nn.Conv2d(width * 2, width, 1)
        mlp_in = width if light else (img_size // 4) ** 2 * width
        self.FC = nn.Sequential(
            nn.Linear(mlp_in, width), nn.ReLU(True), nn.Linear(width, width), nn.ReLU(True)
        )
        for i in range(n_blocks):
            setattr(self, f"DecodeBlock{i + 1}", SoftAdaLINBlock(width))
        self.UpBlock1 = nn.Sequential(*_upsample_block(width, ngf * 2))
        self.UpBlock2 = nn.Sequential(*_upsample_block(ngf * 2, ngf))
        self.HourGlass3, self.HourGlass4 = HourGlass(ngf), HourGlass(ngf, use_res=False)
        self.ConvBlock2 = nn.Sequential(*_pad_conv(3, 3, 7), nn.Tanh())


# ---------------------------------------------------------------- MobileFaceNet


class ConvBn(nn.Module):
    """``Conv_block`` (with PReLU) or ``Linear_block`` (without): bias-free conv, batch norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        prelu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if prelu:
            self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if hasattr(self, "prelu") else x


class DepthWise(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv = ConvBn(cin, groups)
        self.conv_dw = ConvBn(groups, groups, 3, stride, 1, groups=groups)
        self.project = ConvBn(groups, cout, prelu=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class InsightFaceMobileFaceNet(nn.Module):
    """``MobileFaceNet(embedding_size)``: 112x112 face -> L2-normalised embedding."""

    def __init__(self, embedding_size: int = 512) -> None:
        super().__init__()

        def residual(channels: int, count: int, groups: int) -> nn.Module:
            holder = nn.Module()
            blocks = [DepthWise(channels, channels, groups, 1, True) for _ in range(count)]
            holder.model = nn.Sequential(*blocks)
            return holder

        self.conv1 = ConvBn(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBn(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, 2, False)
        self.conv_3 = residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, 2, False)
        self.conv_4 = residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, 2, False)
        self.conv_5 = residual(128, 2, 256)
        self.conv_6_sep = ConvBn(128, 512)
        self.conv_6_dw = ConvBn(512, 512, 7, groups=512, prelu=False)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_3.model(self.conv_23(x))
        x = self.conv_4.model(self.conv_34(x))
        x = self.conv_5.model(self.conv_45(x))
        x = self.conv_6_dw(self.conv_6_sep(x))
        x = self.bn(self.linear(x.flatten(1)))
        return x / x.norm(dim=1, keepdim=True)
