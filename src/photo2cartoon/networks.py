"""U-GAT-IT and photo2cartoon networks: generators with class activation maps (CAM) and
adaptive layer-instance normalisation, and the spectral-norm CAM discriminators.

Both generators share one skeleton: an encoder (7x7 stem, two stride-2 convs, residual blocks),
a CAM that re-weights the encoded features and reports ``[gap_logit, gmp_logit]``, a style MLP,
a decoder of residual blocks with adaptive normalisation, two nearest x2 upsamplings and an
output head. ``ugatit`` (Kim et al., 2019) feeds the decoder AdaILN with ``gamma``/``beta`` heads;
``photo2cartoon`` adds hourglass modules around the encoder/decoder and Soft-AdaLIN, which mixes
the style statistics with content statistics of the encoder blocks.

``forward`` returns only the image, so the module exports to ONNX and serves as it is; training
uses :meth:`Generator.forward_with_attention` for the CAM logits and heatmap as well.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

GENERATOR_KINDS = ("ugatit", "photo2cartoon")
EPS = 1e-5


def _instance_stats(x: torch.Tensor) -> torch.Tensor:
    """Instance-normalised ``x`` (per sample and channel; unbiased variance, as the reference)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def _layer_stats(x: torch.Tensor) -> torch.Tensor:
    """Layer-normalised ``x`` (per sample over channels and pixels; unbiased variance)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def _mix(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``rho * IN(x) + (1 - rho) * LN(x)``: the instance/layer blend both ILN flavours share."""
    return rho * _instance_stats(x) + (1 - rho) * _layer_stats(x)


class AdaILN(nn.Module):
    """Adaptive instance-layer norm: the IN/LN blend ``rho`` is learnt, the affine is given."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and apply the per-sample ``gamma``/``beta`` (``N x C``)."""
        return _mix(x, self.rho) * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Instance-layer norm with learnt blend and affine (called LIN in photo2cartoon)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and apply the learnt affine."""
        return _mix(x, self.rho) * self.gamma + self.beta


class SoftAdaLIN(nn.Module):
    """photo2cartoon's Soft-AdaLIN: AdaILN whose affine blends style and content statistics.

    ``soft = (1 - w) * style + w * content`` for gamma and beta, with learnt ``w`` in [0, 1].
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = AdaILN(channels)
        self.w_gamma = nn.Parameter(torch.zeros(1, channels))
        self.w_beta = nn.Parameter(torch.zeros(1, channels))
        self.content_gamma = _mlp(channels)
        self.content_beta = _mlp(channels)
        self.style_gamma = nn.Linear(channels, channels)
        self.style_beta = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` with the blended affine from ``content`` and ``style`` (``N x C``)."""
        gamma = (1 - self.w_gamma) * self.style_gamma(style) + self.w_gamma * self.content_gamma(
            content
        )
        beta = (1 - self.w_beta) * self.style_beta(style) + self.w_beta * self.content_beta(content)
        return self.norm(x, gamma, beta)


def _mlp(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels, channels), nn.ReLU(True), nn.Linear(channels, channels)
    )


def _conv_in_relu(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, relu: bool = True
) -> nn.Sequential:
    """Reflect pad, bias-free conv, instance norm without affine, optional ReLU."""
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(kernel // 2),
        nn.Conv2d(in_ch, out_ch, kernel, stride, bias=False),
        nn.InstanceNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance-norm layers with an identity skip (the encoder's blocks)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_in_relu(channels, channels, 3), *_conv_in_relu(channels, channels, 3, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + body(x)``."""
        return x + self.body(x)


class AdaptiveResidualBlock(nn.Module):
    """Residual block of the decoder: conv, adaptive norm, ReLU, conv, adaptive norm, skip.

    ``soft`` selects Soft-AdaLIN (photo2cartoon) instead of AdaILN (U-GAT-IT).
    """

    def __init__(self, channels: int, *, soft: bool) -> None:
        super().__init__()
        norm = SoftAdaLIN if soft else AdaILN
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm1 = norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm2 = norm(channels)

    def forward(self, x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``(gamma, beta)`` for AdaILN, ``(content, style)`` features for Soft-AdaLIN."""
        out = F.relu(self.norm1(self.conv1(self.pad(x)), first, second))
        return x + self.norm2(self.conv2(self.pad(out)), first, second)


class PreActBlock(nn.Module):
    """The hourglass's building block: three pre-activated 3x3 convs (C/2, C/4, C/4 channels),
    concatenated, plus the input.

    ``shortcut`` (a pre-activated 1x1 conv) projects the input when the channel counts differ;
    it is always built, as in the released weights, whose parameter count includes it.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.out_ch = out_ch
        self.branch1 = self._preact(in_ch, out_ch // 2, 3)
        self.branch2 = self._preact(out_ch // 2, out_ch // 4, 3)
        self.branch3 = self._preact(out_ch // 4, out_ch // 4, 3)
        self.shortcut = self._preact(in_ch, out_ch, 1)

    @staticmethod
    def _preact(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.InstanceNorm2d(in_ch), nn.ReLU(True)]
        if kernel > 1:
            layers.append(nn.ReflectionPad2d(kernel // 2))
        layers.append(nn.Conv2d(in_ch, out_ch, kernel, bias=False))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``concat(b1, b2, b3) + x`` (projected when the channel counts differ)."""
        out1 = self.branch1(x)
        out2 = self.branch2(out1)
        out3 = self.branch3(out2)
        skip = x if x.shape[1] == self.out_ch else self.shortcut(x)
        return skip + torch.cat((out1, out2, out3), dim=1)


class HourglassBlock(nn.Module):
    """A 4-level hourglass: avg-pool down, a centre block, nearest upsample back with skips."""

    LEVELS = 4

    def __init__(self, in_ch: int, channels: int) -> None:
        super().__init__()
        self.skips = nn.ModuleList(
            PreActBlock(in_ch if level == 0 else channels, channels) for level in range(self.LEVELS)
        )
        self.downs = nn.ModuleList(PreActBlock(channels, channels) for _ in range(self.LEVELS))
        self.center = PreActBlock(channels, channels)
        self.ups = nn.ModuleList(PreActBlock(channels, channels) for _ in range(self.LEVELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same spatial size out as in; the side must be divisible by 16."""
        skips = []
        for skip, down in zip(self.skips, self.downs, strict=True):
            skips.append(skip(x))
            x = down(F.avg_pool2d(x, 2))
        x = self.center(x)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = F.interpolate(up(x), scale_factor=2.0, mode="nearest") + skip
        return x


class HourglassModule(nn.Module):
    """Hourglass, pre-act block, 1x1 conv, IN, ReLU; a 1x1 conv to a 3-channel map.

    With ``residual`` the output is ``x + conv(features) + conv(map)`` (same channels as ``x``);
    without it (the last module of the generator) the 3-channel map itself.
    """

    def __init__(self, in_ch: int, channels: int, *, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            HourglassBlock(in_ch, channels),
            PreActBlock(channels, channels),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
        )
        self.to_map = nn.Conv2d(channels, 3, 1)
        if residual:
            self.features_out = nn.Conv2d(channels, channels, 1)
            self.map_in = nn.Conv2d(3, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        features = self.body(x)
        side_map = self.to_map(features)
        if not self.residual:
            return side_map
        return x + self.features_out(features) + self.map_in(side_map)


class ClassActivation(nn.Module):
    """CAM: GAP and GMP logits from bias-free (or biased) linear maps whose weights re-weight the
    features; both re-weighted maps fused by a 1x1 conv and an activation.

    ``weight_of`` returns the weight used for re-weighting: the plain weight, or for the
    spectral-norm discriminator the *unnormalised* one, as the released models do.
    """

    def __init__(
        self,
        channels: int,
        *,
        bias: bool,
        spectral: bool = False,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda module: module)
        self.spectral = spectral
        self.gap_fc = wrap(nn.Linear(channels, 1, bias=bias))
        self.gmp_fc = wrap(nn.Linear(channels, 1, bias=bias))
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.activation = activation if activation is not None else nn.ReLU(True)

    def _raw_weight(self, fc: nn.Linear) -> torch.Tensor:
        if self.spectral:
            return fc.parametrizations.weight.original
        return fc.weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features, cam_logit N x 2, heatmap N x 1 x H x W)``."""
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        gap = x * self._raw_weight(self.gap_fc)[0][None, :, None, None]
        gmp = x * self._raw_weight(self.gmp_fc)[0][None, :, None, None]
        features = self.activation(self.fuse(torch.cat((gap, gmp), dim=1)))
        heatmap = features.sum(dim=1, keepdim=True)
        return features, torch.cat((gap_logit, gmp_logit), dim=1), heatmap


class Generator(nn.Module):
    """U-GAT-IT (``kind="ugatit"``) or photo2cartoon (``kind="photo2cartoon"``) generator.

    ``light`` pools the CAM features before the style MLP; the full model flattens the whole
    ``img_size/4`` map into it, so it only accepts ``img_size`` inputs (and is ~280M parameters
    at ``ngf`` 64). photo2cartoon needs sides divisible by 16 (its hourglasses), U-GAT-IT by 4.
    """

    def __init__(
        self,
        kind: str = "ugatit",
        *,
        ngf: int = 64,
        img_size: int = 256,
        light: bool = True,
        n_res: int = 4,
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if kind not in GENERATOR_KINDS:
            raise ValueError(f"kind must be one of {GENERATOR_KINDS}, got {kind!r}")
        self.kind, self.light, self.img_size = kind, light, img_size
        hourglass = kind == "photo2cartoon"
        width = ngf * 4
        self.stem = _conv_in_relu(in_channels, ngf, 7)
        if hourglass:
            self.hourglass_in = nn.ModuleList(
                [HourglassModule(ngf, ngf), HourglassModule(ngf, ngf)]
            )
        self.down = nn.Sequential(
            _conv_in_relu(ngf, ngf * 2, 3, 2), _conv_in_relu(ngf * 2, width, 3, 2)
        )
        self.encoder_blocks = nn.ModuleList(ResidualBlock(width) for _ in range(n_res))
        self.cam = ClassActivation(width, bias=hourglass)
        mlp_in = width if light else (img_size // 4) ** 2 * width
        self.style_mlp = nn.Sequential(
            nn.Linear(mlp_in, width, bias=hourglass),
            nn.ReLU(True),
            nn.Linear(width, width, bias=hourglass),
            nn.ReLU(True),
        )
        if not hourglass:
            self.gamma = nn.Linear(width, width, bias=False)
            self.beta = nn.Linear(width, width, bias=False)
        self.decoder_blocks = nn.ModuleList(
            AdaptiveResidualBlock(width, soft=hourglass) for _ in range(n_res)
        )
        self.up = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(ch, ch // 2, 3, bias=False),
                    ILN(ch // 2),
                    nn.ReLU(True),
                )
                for ch in (width, ngf * 2)
            )
        )
        if hourglass:
            self.hourglass_out = nn.ModuleList(
                [HourglassModule(ngf, ngf), HourglassModule(ngf, ngf, residual=False)]
            )
        head_in = 3 if hourglass else ngf
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(head_in, out_channels, 7, bias=False), nn.Tanh()
        )

    def forward_with_attention(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, cam_logit N x 2, heatmap N x 1 x H/4 x W/4)``: what training needs."""
        x = self.stem(x)
        if self.kind == "photo2cartoon":
            for module in self.hourglass_in:
                x = module(x)
        x = self.down(x)
        content = []
        for block in self.encoder_blocks:
            x = block(x)
            content.append(F.adaptive_avg_pool2d(x, 1).flatten(1))
        x, cam_logit, heatmap = self.cam(x)
        pooled = F.adaptive_avg_pool2d(x, 1) if self.light else x
        style = self.style_mlp(pooled.flatten(1))
        if self.kind == "photo2cartoon":
            # Soft-AdaLIN: the deepest encoder block's content feeds the first decoder block.
            for block, features in zip(self.decoder_blocks, reversed(content), strict=True):
                x = block(x, features, style)
            x = self.up(x)
            for module in self.hourglass_out:
                x = module(x)
        else:
            gamma, beta = self.gamma(style), self.beta(style)
            for block in self.decoder_blocks:
                x = block(x, gamma, beta)
            x = self.up(x)
        return self.head(x), cam_logit, heatmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The translated image only (``N x 3 x H x W`` in [-1, 1]); exports to ONNX as is."""
        return self.forward_with_attention(x)[0]


class Discriminator(nn.Module):
    """Multi-scale PatchGAN critic with a CAM, every conv spectrally normalised.

    ``n_layers`` 7 is the global critic (286 px receptive field, 6x6 logits at 256 px), 5 the
    local one (70 px, 30x30). Returns ``(patch logits, cam_logit N x 2, heatmap)``.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"n_layers must be at least 3, got {n_layers}")
        blocks = [self._block(in_channels, ndf, stride=2)]
        blocks += [
            self._block(ndf * 2 ** (i - 1), ndf * 2**i, stride=2) for i in range(1, n_layers - 2)
        ]
        width = ndf * 2 ** (n_layers - 2)
        blocks.append(self._block(width // 2, width, stride=1))
        self.features = nn.Sequential(*blocks)
        self.cam = ClassActivation(
            width, bias=False, spectral=True, activation=nn.LeakyReLU(0.2, True)
        )
        self.head = nn.Sequential(
            nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(width, 1, 4, bias=False))
        )

    @staticmethod
    def _block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_ch, out_ch, 4, stride)),
            nn.LeakyReLU(0.2, True),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(patch logits N x 1 x h x w, cam_logit N x 2, heatmap N x 1 x h' x w')``."""
        features, cam_logit, heatmap = self.cam(self.features(x))
        return self.head(features), cam_logit, heatmap


def clip_rho_and_w(module: nn.Module) -> None:
    """Clamp every ILN/AdaILN ``rho`` and Soft-AdaLIN ``w_gamma``/``w_beta`` into [0, 1].

    Called after every generator step: the blends are convex combinations only in that range.
    """
    with torch.no_grad():
        for sub in module.modules():
            for name in ("rho", "w_gamma", "w_beta"):
                param = getattr(sub, name, None)
                if isinstance(param, nn.Parameter):
                    param.clamp_(0.0, 1.0)


def build_generator(config: dict[str, Any]) -> Generator:
    """The ``photo2cartoon`` family's builder for exported ``generator.pt`` files."""
    known = {"kind", "ngf", "img_size", "light", "n_res", "in_channels", "out_channels"}
    return Generator(**{key: value for key, value in config.items() if key in known})


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (spectral-norm originals included, power-iteration vectors not)."""
    return sum(p.numel() for p in module.parameters())
