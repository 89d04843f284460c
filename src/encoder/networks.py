"""Encoders from face crops into a StyleGAN's W+ space: e4e and ReStyle's e4e and pSp heads.

All three share an IR-SE backbone (the ArcFace ResNet: a 3 x 3 stem, then four stages of
bottleneck units with squeeze-and-excitation, 64/128/256/512 channels, 3/4/14/3 units for
IR-SE50). Parameter names follow the official releases (``input_layer.*``, ``body.{i}.*``,
``styles.{i}.*``, ``latlayer1/2.*``), so their checkpoints load by stripping the ``encoder.``
prefix. Widths, units and the input size are arguments, so tests and the smoke chain can build
tiny encoders with the same structure.

* :class:`Encoder4Editing` (e4e, Tov et al. 2021): a feature pyramid over the last three
  stages; ``styles[0]`` gives one base w from the coarsest map, ``styles[i]`` an offset for
  layer ``i`` (coarse layers 1-2 from the coarse map, 3-6 from the middle, 7+ from the fine).
* :class:`ProgressiveBackboneEncoder` (ReStyle-e4e) and :class:`BackboneEncoder` (ReStyle-pSp,
  Alaluf et al. 2021): every style from the last map; e4e's base-plus-offsets or one w per layer.

``progressive_stage`` limits e4e's offsets to layers ``1..stage`` (progressive training); None
uses every layer (inference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import UserError

KINDS = ("e4e", "restyle_e4e", "restyle_psp")
# IR-SE50 as released: channels and bottleneck units per stage.
IRSE50_WIDTHS = (64, 128, 256, 512)
IRSE50_UNITS = (3, 4, 14, 3)
# e4e's pyramid: styles below COARSE read the coarsest map, below MIDDLE the middle one.
COARSE = 3
MIDDLE = 7


class EqualLinear(nn.Module):
    """A linear layer with the equalised learning rate of StyleGAN2 (weights scaled at run time
    by ``lr_mul / sqrt(in_features)``), as the encoders' map-to-style heads use it."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        """``x @ (weight * scale).T + bias * lr_mul``."""
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class SEModule(nn.Module):
    """Squeeze-and-excitation: channels rescaled by a gate computed from their global mean."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` times its per-channel gate in (0, 1)."""
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIR(nn.Module):
    """One IR unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN (-> SE), plus a
    shortcut (a strided subsample when the width stays, else a 1x1 conv and BN)."""

    def __init__(
        self, in_channels: int, depth: int, stride: int, se_reduction: int | None = 16
    ) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut_layer: nn.Module
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se_reduction:
            layers.append(SEModule(depth, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus shortcut."""
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """Map-to-style head: stride-2 3x3 convs with LeakyReLU from a ``spatial`` map down to
    1 x 1, then an equalised linear layer to one w."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        pools = max(1, int(math.log2(spatial)))
        layers: list[nn.Module] = []
        for index in range(pools):
            layers += [
                nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, 2, 1),
                nn.LeakyReLU(),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """[N, out_channels] from a feature map."""
        return self.linear(self.convs(x).reshape(-1, self.out_channels))


class IRSEEncoder(nn.Module):
    """The shared backbone: ``input_layer`` (3x3 conv, BN, PReLU) and ``body`` (the units)."""

    kind = "irse"

    def __init__(
        self,
        *,
        n_styles: int,
        w_dim: int = 512,
        input_size: int = 256,
        in_channels: int = 3,
        widths: Sequence[int] = IRSE50_WIDTHS,
        units: Sequence[int] = IRSE50_UNITS,
        se_reduction: int | None = 16,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(units) != 4 or min(units) < 1:
            raise UserError("encoder: widths and units need four stages of at least one unit")
        if input_size < 32 or 2 ** int(math.log2(input_size)) != input_size:
            raise UserError(f"encoder.input_size={input_size}: use a power of two >= 32")
        self.n_styles = int(n_styles)
        self.w_dim = int(w_dim)
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        self.progressive_stage: int | None = None
        stem = int(widths[0])
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        modules = []
        previous = stem
        self.stage_ends: list[int] = []
        for width, count in zip(widths, units, strict=True):
            for index in range(count):
                stride = 2 if index == 0 else 1
                modules.append(BottleneckIR(previous, int(width), stride, se_reduction))
                previous = int(width)
            self.stage_ends.append(len(modules) - 1)
        self.body = nn.Sequential(*modules)
        self.widths = [int(w) for w in widths]

    def stage_features(self, x: Tensor) -> list[Tensor]:
        """The output of each of the four stages (strides 2, 4, 8, 16)."""
        x = self.input_layer(x)
        features = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.stage_ends:
                features.append(x)
        return features

    def active_styles(self) -> int:
        """How many styles contribute: all, or ``1 + progressive_stage`` while training."""
        if self.progressive_stage is None:
            return self.n_styles
        return max(1, min(self.progressive_stage + 1, self.n_styles))


def upsample_add(coarse: Tensor, lateral: Tensor) -> Tensor:
    """The pyramid's top-down step: bilinear (corners aligned) to the lateral's size, plus it."""
    size = lateral.shape[-2:]
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(IRSEEncoder):
    """e4e: base w from the coarsest map plus per-layer offsets from a feature pyramid."""

    kind = "e4e"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        top = self.widths[3]
        sixteenth = self.input_size // 16
        self.styles = nn.ModuleList()
        for index in range(self.n_styles):
            spatial = sixteenth if index < COARSE else sixteenth * (2 if index < MIDDLE else 4)
            self.styles.append(GradualStyleBlock(top, self.w_dim, spatial))
        self.latlayer1 = nn.Conv2d(self.widths[2], top, 1)
        self.latlayer2 = nn.Conv2d(self.widths[1], top, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Offsets from the latent average, [N, n_styles, w_dim]."""
        _, fine, middle, coarse = self.stage_features(x)
        base = self.styles[0](coarse)
        offsets = [torch.zeros_like(base)]
        features = coarse
        for index in range(1, self.active_styles()):
            if index == COARSE:
                pyramid_middle = upsample_add(coarse, self.latlayer1(middle))
                features = pyramid_middle
            elif index == MIDDLE:
                features = upsample_add(pyramid_middle, self.latlayer2(fine))
            offsets.append(self.styles[index](features))
        offsets += [torch.zeros_like(base)] * (self.n_styles - len(offsets))
        return base.unsqueeze(1) + torch.stack(offsets, dim=1)


class BackboneEncoder(IRSEEncoder):
    """ReStyle-pSp: one independent w per layer from the last (stride-16) map."""

    kind = "restyle_psp"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        spatial = self.input_size // 16
        self.styles = nn.ModuleList(
            GradualStyleBlock(self.widths[3], self.w_dim, spatial) for _ in range(self.n_styles)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residuals on ws, [N, n_styles, w_dim]."""
        features = self.stage_features(x)[-1]
        return torch.stack([style(features) for style in self.styles], dim=1)


class ProgressiveBackboneEncoder(BackboneEncoder):
    """ReStyle-e4e: the same style blocks as ReStyle-pSp, read as a base w plus per-layer
    offsets (progressively enabled)."""

    kind = "restyle_e4e"

    def forward(self, x: Tensor) -> Tensor:
        """Residuals on ws, [N, n_styles, w_dim]."""
        features = self.stage_features(x)[-1]
        base = self.styles[0](features)
        offsets = [torch.zeros_like(base)]
        offsets += [self.styles[i](features) for i in range(1, self.active_styles())]
        offsets += [torch.zeros_like(base)] * (self.n_styles - len(offsets))
        return base.unsqueeze(1) + torch.stack(offsets, dim=1)


ENCODERS: dict[str, type[IRSEEncoder]] = {
    "e4e": Encoder4Editing,
    "restyle_e4e": ProgressiveBackboneEncoder,
    "restyle_psp": BackboneEncoder,
}
CONFIG_KEYS = ("n_styles", "w_dim", "input_size", "in_channels", "widths", "units", "se_reduction")


def build_encoder(config: dict[str, Any]) -> IRSEEncoder:
    """An encoder from ``{kind, n_styles, w_dim, input_size, in_channels, widths, units,
    se_reduction}`` (ReStyle kinds default to 6 input channels: photo and reconstruction)."""
    kind = str(config.get("kind", "e4e"))
    if kind not in ENCODERS:
        raise UserError(f"encoder.kind={kind!r}; use one of {', '.join(KINDS)}")
    unknown = sorted(set(config) - {"kind", *CONFIG_KEYS})
    if unknown:
        raise UserError(f"encoder: unknown keys {', '.join(unknown)}; known: {CONFIG_KEYS}")
    kwargs = {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None or k == "n_styles"}
    kwargs.setdefault("in_channels", 3 if kind == "e4e" else 6)
    if kwargs.get("n_styles") is None:
        raise UserError("encoder.n_styles is not set; use the generator's num_ws")
    return ENCODERS[kind](**kwargs)


def encoder_config(encoder: IRSEEncoder, se_reduction: int | None) -> dict[str, Any]:
    """The :func:`build_encoder` config that rebuilds ``encoder``."""
    stages = [encoder.stage_ends[0] + 1] + [
        b - a for a, b in zip(encoder.stage_ends, encoder.stage_ends[1:], strict=False)
    ]
    return {
        "kind": encoder.kind,
        "n_styles": encoder.n_styles,
        "w_dim": encoder.w_dim,
        "input_size": encoder.input_size,
        "in_channels": encoder.in_channels,
        "widths": list(encoder.widths),
        "units": stages,
        "se_reduction": se_reduction,
    }
