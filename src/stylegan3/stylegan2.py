"""StyleGAN2 generator (config F of "Analyzing and Improving the Image Quality of StyleGAN", as
released in StyleGAN2-ADA and in the StyleGAN3 repository's ``stylegan2`` config).

Synthesis runs block by block from a learned 4x4 constant up to the output resolution: each block
upsamples with a modulated 3x3 conv (transposed, then the [1, 3, 3, 1] FIR filter), adds per-pixel
noise, and in the ``skip`` architecture adds its ToRGB output to the upsampled image of the block
below. ``num_ws = 2 * log2(resolution) - 2``: every conv takes one w and a block's ToRGB shares
the w of the next block's first conv. Parameter and buffer names match the official pickles.

Mixed precision as the official networks: the blocks at the ``num_fp16_res`` highest resolutions
(never below 8 px) compute in float16 on CUDA (``precision.layer_dtype``; float32 elsewhere and
with ``force_fp32``), channels-last with ``fp16_channels_last``; their float32 weights are cast
per forward, ``conv_clamp`` bounds every layer's activations, and the skip image stays float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.stylegan3.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from src.stylegan3.ops import bias_act, setup_filter, upfirdn2d, upsample2d
from src.stylegan3.ops.bias_act import ACTIVATIONS
from src.stylegan3.precision import layer_dtype, layer_memory_format, weight_memory_format

ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("random", "const", "none")


def _resampled_conv(
    x: Tensor, weight: Tensor, up: int, padding: int, groups: int, resample_filter: Tensor
) -> Tensor:
    """``conv2d`` (correlation) when ``up`` is 1; for ``up`` 2 the official path: a stride-2
    transposed conv (a true convolution with ``weight``), then the FIR filter with gain 4."""
    if up == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    out_total, in_per_group, kh, kw = weight.shape
    weight = weight.reshape(groups, out_total // groups, in_per_group, kh, kw).transpose(1, 2)
    weight = weight.reshape(groups * in_per_group, out_total // groups, kh, kw)
    taps = resample_filter.shape[-1]
    pad0 = padding + (taps + up - 1) // 2 - (kw - 1)
    pad1 = padding + (taps - up) // 2 - (kw - up)
    trim = max(min(-pad0, -pad1), 0)
    x = F.conv_transpose2d(x, weight, stride=up, padding=trim, groups=groups)
    pads = [pad0 + trim, pad1 + trim, pad0 + trim, pad1 + trim]
    return upfirdn2d(x, resample_filter, padding=pads, gain=up**2)


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    noise: Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = True,
) -> Tensor:
    """StyleGAN2's modulated conv: input channels scaled by ``styles``, outputs normalised to
    unit variance when ``demodulate``, then ``noise`` added. Fused: one grouped conv with
    per-sample weights; else the activations are scaled before and after one shared conv."""
    batch = x.shape[0]
    in_channels, kh, kw = weight.shape[1:]
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise so that the float16 products cannot overflow (the result is the same).
        weight = weight * (
            1
            / math.sqrt(in_channels * kh * kw)
            / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = _resampled_conv(x, weight.to(x.dtype), up, padding, 1, resample_filter)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        return x if noise is None else x + noise.to(x.dtype)
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw).to(x.dtype)
    x = _resampled_conv(x, w, up, padding, batch, resample_filter)
    x = x.reshape(batch, -1, *x.shape[2:])
    return x if noise is None else x + noise.to(x.dtype)


class SynthesisLayer(nn.Module):
    """Modulated conv (optionally upsampling 2x), noise, bias, activation and clamp, in the
    input's dtype (``channels_last``: the weight is stored channels-last, as the block's input)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: list[float] | None = None,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter or [1, 3, 3, 1]))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].default_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
                memory_format=weight_memory_format(channels_last)
            )
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1,
    ) -> Tensor:
        """[N, in, res / up, res / up] -> [N, out, res, res]; ``noise_mode`` random (fresh
        noise per call), const (the stored ``noise_const``) or none."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(
                f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}"
            )
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            fused_modconv=fused_modconv,
        )
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(
            x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp
        )

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, "
            f"up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation, plus bias and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
                memory_format=weight_memory_format(channels_last)
            )
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: the 4x4 constant (first block) or a 2x upsampling conv0, then conv1, and
    the ToRGB that the ``skip`` architecture (and the last block) has."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: list[float] | None = None,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default: bool | str | None = None,
        **layer_kwargs: object,
    ) -> None:
        """``fused_modconv_default``: per-sample (fused) weights always (True), never (False),
        only outside training (``inference_only``, the StyleGAN3 repository's stylegan2 cfg) or,
        None (StyleGAN2-ADA, whose pickles record no default), outside training when the block
        runs in float32 or on a batch of one."""
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        resample_filter = resample_filter or [1, 3, 3, 1]
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.fused_modconv_default = fused_modconv_default
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        layout = {"channels_last": self.channels_last}
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layout,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            **layout,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, **layout
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                **layout,
            )

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        update_emas: bool = False,
        **layer_kwargs: object,
    ) -> tuple[Tensor, Tensor | None]:
        """Features (in the block's dtype) and float32 image at this resolution from those of
        the block below (None for the first block); ``ws`` holds this block's num_conv +
        num_torgb ws. ``update_emas`` is accepted as the release's signature has it."""
        w_iter = iter(ws.unbind(dim=1))
        dtype = layer_dtype(self.use_fp16, force_fp32, ws.device)
        memory_format = layer_memory_format(self.channels_last, dtype)
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv is None:
            fused_modconv = not self.training and (dtype == torch.float32 or ws.shape[0] == 1)
        elif fused_modconv == "inference_only":
            fused_modconv = not self.training
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(
                x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs
            )
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, res, res], blocks ``b4`` .. ``b{res}``."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        **block_kwargs: object,
    ) -> None:
        super().__init__()
        log2_res = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2_res != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2**i for i in range(2, log2_res + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2_res + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: Tensor, **block_kwargs: object) -> Tensor:
        """Images from ws: block ``b{res}`` reads its convs' ws and the next one (its ToRGB)."""
        ws = ws.to(torch.float32)
        x = img = None
        index = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, index, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, **block_kwargs)
            index += block.num_conv
        return img

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}"
        )


class Generator(nn.Module):
    """z, c -> image: the mapping network (8 layers unless ``mapping_kwargs`` says otherwise)
    followed by the synthesis network.

    Synthesis options come flat (the StyleGAN3 repository's pickles) or as ``synthesis_kwargs``
    (StyleGAN2-ADA's pickles); both spellings build the same network.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
        **flat_synthesis_kwargs: object,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            **{**(synthesis_kwargs or {}), **flat_synthesis_kwargs},
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            num_ws=self.num_ws,
            **{"num_layers": 8, **(mapping_kwargs or {})},
        )

    def forward(
        self,
        z: Tensor,
        c: Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: object,
    ) -> Tensor:
        """[N, img_channels, img_resolution, img_resolution] images for latents ``z``;
        ``synthesis_kwargs``: ``noise_mode`` (random by default, as released),
        ``fused_modconv``, ``force_fp32``."""
        ws = self.mapping(
            z,
            c,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
