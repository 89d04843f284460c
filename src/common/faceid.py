"""Face identity networks shared by every stage that compares who is in two pictures.

- MobileFaceNet (Chen et al., 2018): a 112x112 face to a unit 512-d embedding, module names of
  the public InsightFace PyTorch weights (``model_mobilefacenet.pth``). photo2cartoon's face-ID
  loss (:class:`FaceIdLoss`) uses it and never runs on random features: it refuses to exist
  without a weights file, and training turns the loss off with one warning when none is set.
- ArcFace IResNet-50 (insightface's ``arcface_torch`` ``iresnet50``): module names of its
  released backbones (``ms1mv3_arcface_r50_fp16/backbone.pth``, a plain state dict), so that
  file loads by name. The latent tools' identity loss and similarity metric use it through
  :func:`load_identity_encoder`.

Both take RGB faces in [-1, 1] (insightface's ``(x / 255 - 0.5) / 0.5``); each template of
aligned crop has its own box that is cut and resized to 112 px (:data:`FACE_CROPS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.weights import where_to_get

EMBEDDING_SIZE = 512
FACE_SIZE = 112
IDENTITY_NETS = ("iresnet50", "mobilefacenet")
# A seeded random network instead of weights: only for tests and smoke runs (said in results).
RANDOM_WEIGHTS = "random"


class ConvBlock(nn.Module):
    """Conv (no bias), batch norm, optional PReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        *,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.prelu = nn.PReLU(out_ch) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv -> bn -> prelu."""
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``groups``, depthwise 3x3, linear 1x1 project."""

    def __init__(
        self, in_ch: int, out_ch: int, groups: int, stride: int = 2, *, residual: bool = False
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv = ConvBlock(in_ch, groups)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups=groups)
        self.project = ConvBlock(groups, out_ch, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck, plus ``x`` when residual."""
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """``count`` residual depthwise bottlenecks at constant width."""

    def __init__(self, channels: int, count: int, groups: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *(DepthWise(channels, channels, groups, 1, residual=True) for _ in range(count))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in order."""
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet: 112x112 RGB face -> L2-normalised ``embedding_size`` vector."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, groups=128)
        self.conv_3 = Residual(64, 4, groups=128)
        self.conv_34 = DepthWise(64, 128, groups=256)
        self.conv_4 = Residual(128, 6, groups=256)
        self.conv_45 = DepthWise(128, 128, groups=512)
        self.conv_5 = Residual(128, 2, groups=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = ConvBlock(512, 512, 7, groups=512, activation=False)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings ``N x embedding_size`` of ``N x 3 x 112 x 112`` faces."""
        for layer in (
            self.conv1,
            self.conv2_dw,
            self.conv_23,
            self.conv_3,
            self.conv_34,
            self.conv_4,
            self.conv_45,
            self.conv_5,
            self.conv_6_sep,
            self.conv_6_dw,
        ):
            x = layer(x)
        return F.normalize(self.bn(self.linear(x.flatten(1))), dim=1)


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """The fixed face box of an aligned portrait (photo2cartoon's template), resized to 112 px.

    Rows from ``0.47 H / 2.1`` to ``H - 0.3 H / 2.1``, a centred square of that height.
    """
    height, width = images.shape[2:]
    top = int(height / 2.1 * (0.8 - 0.33))
    bottom = int(height - height / 2.1 * 0.3)
    size = bottom - top
    left = int(width / 2 - size / 2)
    crop = images[:, :, top:bottom, left : left + size]
    return F.interpolate(crop, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=True)


class FaceIdLoss(nn.Module):
    """``1 - cos(f(face crop of x), f(face crop of y))`` per sample, with a frozen MobileFaceNet.

    ``weights`` is the path of MobileFaceNet weights (``model_mobilefacenet.pth``); without
    them there is no loss (a :class:`UserError`), never one computed on random features.
    """

    def __init__(self, weights: str | os.PathLike[str] | None) -> None:
        super().__init__()
        if not weights:
            raise UserError(
                "the face-ID loss needs MobileFaceNet weights: set faceid_weights to the path "
                "of model_mobilefacenet.pth (InsightFace_Pytorch), or set faceid_weight=0"
            )
        path = Path(weights)
        if not path.is_file():
            hint = where_to_get(path)
            raise UserError(f"faceid_weights: {path} does not exist; fix the path{hint}")
        self.net = MobileFaceNet()
        state = load_checkpoint(path)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        load_state_dict_checked(self.net, state, str(path))
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> FaceIdLoss:
        """Stay in eval mode: the recogniser's batch-norm statistics are fixed."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, images: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the cosine distance between the two images' embeddings."""
        first = self.net(face_crop(images))
        second = self.net(face_crop(translated))
        return (1 - F.cosine_similarity(first, second, dim=1)).mean()


# ------------------------------------------------------------------ ArcFace IResNet-50


class IBasicBlock(nn.Module):
    """Improved residual block: bn, 3x3 conv, bn, PReLU, 3x3 conv (strided), bn, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=1e-5)
            )
            if stride != 1 or in_ch != out_ch
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch plus ``x`` (projected when the shape changes)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace's IResNet: 112x112 face -> ``embedding_size`` features (not normalised).

    Four stages of 64, 128, 256, 512 channels, each halving the size (112 -> 7), then bn, a
    linear layer on the 7x7x512 map and a batch norm (``features``) on the embedding.
    """

    def __init__(self, blocks: tuple[int, int, int, int], embedding_size: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_ch = 64
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stage = [IBasicBlock(in_ch, width, 2)]
            stage += [IBasicBlock(width, width) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x embedding_size`` features of ``N x 3 x 112 x 112`` faces in [-1, 1]."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x.float()))


def iresnet50(embedding_size: int = EMBEDDING_SIZE) -> IResNet:
    """IResNet-50: 3, 4, 14 and 3 blocks (insightface's ``iresnet50``, ``r50`` backbones)."""
    return IResNet((3, 4, 14, 3), embedding_size)


def ffhq_face_crop(images: torch.Tensor) -> torch.Tensor:
    """The face box of an FFHQ-aligned portrait resized to 112 px: rows 35-223 and columns
    32-220 of a 256-px crop (the box pSp/e4e's ArcFace identity loss cuts), at any size."""
    height, width = images.shape[2:]
    crop = images[
        :,
        :,
        round(height * 35 / 256) : round(height * 223 / 256),
        round(width * 32 / 256) : round(width * 220 / 256),
    ]
    return F.interpolate(crop, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)


# Aligned-crop template -> the box a recogniser sees.
FACE_CROPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ffhq": ffhq_face_crop,
    "photo2cartoon": face_crop,
}
IDENTITY_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "iresnet50": iresnet50,
    "mobilefacenet": MobileFaceNet,
}


class IdentityEncoder(nn.Module):
    """A frozen recogniser and its crop: aligned faces in [-1, 1] -> unit embeddings.

    ``label`` names the network and its weights; it says "random" for the stand-in.
    """

    def __init__(
        self, net: nn.Module, crop: Callable[[torch.Tensor], torch.Tensor], label: str
    ) -> None:
        super().__init__()
        self.net = net.requires_grad_(False).eval()
        self.crop = crop
        self.label = label

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Stay in eval mode: the recogniser's batch-norm statistics are fixed."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``N x embedding`` unit vectors of ``N x 3 x H x W`` aligned faces."""
        return F.normalize(self.net(self.crop(images)), dim=1)

    def distance(self, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per sample ``1 - cos`` between the faces in ``images`` and ``reference`` embeddings."""
        return 1 - (self(images) * reference).sum(dim=1)


def load_identity_encoder(
    kind: str, weights: str | os.PathLike[str] | None, key: str, template: str = "ffhq"
) -> IdentityEncoder:
    """The ``kind`` recogniser with ``weights`` (a state dict by name, or ``"random"`` for a
    seeded stand-in), cropping ``template``-aligned faces. ``key`` is the config key that sets
    ``weights``, named in the one-line error when the file is missing."""
    if kind not in IDENTITY_BUILDERS:
        raise UserError(f"{key}: unknown identity network {kind!r}; use one of {IDENTITY_NETS}")
    if template not in FACE_CROPS:
        raise UserError(f"unknown face template {template!r}; use one of {sorted(FACE_CROPS)}")
    if not weights:
        raise UserError(
            f"{key} is not set: give the path of the {kind} weights (insightface's "
            "ms1mv3_arcface_r50_fp16/backbone.pth for iresnet50)"
        )
    if str(weights) == RANDOM_WEIGHTS:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = IDENTITY_BUILDERS[kind]()
        return IdentityEncoder(net, FACE_CROPS[template], f"{kind} (random stand-in weights)")
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist; download the {kind} weights there")
    net = IDENTITY_BUILDERS[kind]()
    state = load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{key}: {path} is not a state dict of {kind} weights")
    state = {
        k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in state.items()
    }
    load_state_dict_checked(net, state, str(path))
    return IdentityEncoder(net, FACE_CROPS[template], f"{kind} ({path.name})")
