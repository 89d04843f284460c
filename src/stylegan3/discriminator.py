"""StyleGAN2 residual discriminator (the one StyleGAN3 trains against), official names."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from src.stylegan3.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from src.stylegan3.ops import setup_filter
from src.stylegan3.precision import layer_dtype, layer_memory_format


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second halving the resolution) plus a downsampled 1x1 skip, each path
    scaled by sqrt(0.5) so the sum keeps unit variance; the first block also reads the image.

    ``use_fp16``: the block computes in float16 on CUDA (channels-last too with
    ``fp16_channels_last``), its float32 weights cast per forward.
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        resample_filter: list[float] | None = None,
        conv_clamp: float | None = None,
        activation: str = "lrelu",
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
    ) -> None:
        super().__init__()
        resample_filter = resample_filter or [1, 3, 3, 1]
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        layout = {"channels_last": self.channels_last}
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(
                img_channels,
                tmp_channels,
                1,
                activation=activation,
                conv_clamp=conv_clamp,
                **layout,
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, 3, activation=activation, conv_clamp=conv_clamp, **layout
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            **layout,
        )
        self.skip = Conv2dLayer(
            tmp_channels,
            out_channels,
            1,
            bias=False,
            down=2,
            resample_filter=resample_filter,
            **layout,
        )

    def forward(self, x: Tensor | None, img: Tensor, force_fp32: bool = False) -> Tensor:
        """Features at half the block's resolution, in the block's dtype."""
        dtype = layer_dtype(self.use_fp16, force_fp32, img.device)
        memory_format = layer_memory_format(self.channels_last, dtype)
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype=dtype, memory_format=memory_format))
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
        residual = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return residual + x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}"


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation of features across groups of samples, so that the
    discriminator can see a lack of variety in a batch."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        """``group_size`` None: the whole batch is one group (StyleGAN2's own pickles)."""
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, C + num_channels, H, W]; N must divide by the group size (None:
        one group of the whole batch)."""
        batch, channels, height, width = x.shape
        group = batch if self.group_size is None else min(self.group_size, batch)
        feats = self.num_channels
        y = x.reshape(group, -1, feats, channels // feats, height, width)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])
        y = y.reshape(-1, feats, 1, 1).repeat(group, 1, height, width)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """4x4 head, always float32: minibatch stddev (none when ``mbstd_num_channels`` is 0), 3x3
    conv, FC, then the score (or a projection onto the class embedding ``cmap``)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int = 4,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
        activation: str = "lrelu",
    ) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(
            in_channels * resolution**2, in_channels, activation=activation
        )
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: Tensor, cmap: Tensor | None) -> Tensor:
        """[N, 1] float32 scores."""
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.fc(self.conv(x).flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """img [N, C, res, res] (and labels c) -> realness score [N, 1]."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        conv_clamp: float | None = 256,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ) -> None:
        """Official init kwargs are accepted; ``block_kwargs['freeze_layers']`` (as in the
        official training options) freezes that many leading conv layers, counted from fromrgb."""
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        freeze_layers = block_kwargs.pop("freeze_layers", 0)
        if architecture != "resnet":
            raise ValueError(f"only the 'resnet' architecture is implemented, got {architecture!r}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        log2_res = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2_res, 2, -1)]
        # Blocks at the num_fp16_res highest resolutions (never below 8 px) run in float16.
        fp16_resolution = max(2 ** (log2_res + 1 - num_fp16_res), 8)
        channels = {
            res: min(channel_base // res, channel_max) for res in [*self.block_resolutions, 4]
        }
        self.cmap_dim = 0 if c_dim == 0 else (channels[4] if cmap_dim is None else cmap_dim)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                in_channels=channels[res] if res < img_resolution else 0,
                tmp_channels=channels[res],
                out_channels=channels[res // 2],
                resolution=res,
                img_channels=img_channels,
                conv_clamp=conv_clamp,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            setattr(self, f"b{res}", block)
        self._freeze_leading_layers(freeze_layers)
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0,
                c_dim=c_dim,
                w_dim=self.cmap_dim,
                num_ws=None,
                w_avg_beta=None,
                **{"num_layers": 8, "lr_multiplier": 0.01, **(mapping_kwargs or {})},
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=self.cmap_dim, conv_clamp=conv_clamp, **(epilogue_kwargs or {})
        )

    def _freeze_leading_layers(self, count: int) -> None:
        """Stop gradients into the first ``count`` layers, numbered as the official code does:
        per block fromrgb (first block only), conv0, conv1, then the skip."""
        layers = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            first = [block.fromrgb] if block.in_channels == 0 else []
            layers += [*first, block.conv0, block.conv1, block.skip]
        for layer in layers[:count]:
            layer.requires_grad_(False)

    def forward(
        self, img: Tensor, c: Tensor | None, update_emas: bool = False, force_fp32: bool = False
    ) -> Tensor:
        """[N, 1] float32 scores; ``update_emas`` is accepted for interface parity and unused,
        ``force_fp32`` runs the fp16 blocks in float32."""
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)
