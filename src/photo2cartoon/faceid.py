"""Face-ID loss: 1 - cosine similarity of MobileFaceNet embeddings of a face and its cartoon.

MobileFaceNet (Chen et al., 2018) maps a 112x112 face to a unit 512-d embedding. Its module
names follow the public InsightFace PyTorch weights (``model_mobilefacenet.pth``), so that file
loads as it is. The loss never runs on random features: :class:`FaceIdLoss` refuses to exist
without a weights file, and training turns the loss off with one warning when none is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.weights import where_to_get

EMBEDDING_SIZE = 512
FACE_SIZE = 112


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
