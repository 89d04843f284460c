"""StyleGAN3 generator (configs T and R of "Alias-Free Generative Adversarial Networks").

The synthesis network treats every feature map as a discretely sampled continuous signal: each
layer has a cutoff frequency, a stopband and a sampling rate from a geometric schedule, and its
nonlinearity runs at twice the sampling rate between Kaiser (or, for R, radial jinc) low-pass
filters so that it adds no aliases. Parameter and buffer names match the official release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.stylegan3.layers import FullyConnectedLayer, MappingNetwork
from src.stylegan3.ops import filtered_lrelu
from src.stylegan3.precision import layer_dtype

# Accepted for code written for the official networks; StyleGAN3 has no noise inputs.
NOISE_MODES = ("random", "const", "none")


def check_noise_mode(noise_mode: str) -> None:
    """Reject a ``noise_mode`` the official networks would reject (the value is unused)."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")


@dataclass(frozen=True)
class LayerSpec:
    """One entry of the synthesis schedule (index 0 also describes the Fourier-feature input)."""

    index: int
    cutoff: float
    stopband: float
    sampling_rate: int
    half_width: float
    size: int
    channels: int

    @property
    def name(self) -> str:
        return f"L{self.index}_{self.size}_{self.channels}"


def layer_specs(
    img_resolution: int,
    img_channels: int = 3,
    channel_base: int = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
) -> list[LayerSpec]:
    """The ``num_layers + 1`` layer specs: cutoffs and stopbands grow geometrically until the
    last ``num_critical`` layers, which sit at the output's Nyquist rate without margins."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return [
        LayerSpec(
            index=idx,
            cutoff=float(cutoffs[idx]),
            stopband=float(stopbands[idx]),
            sampling_rate=int(sampling_rates[idx]),
            half_width=float(half_widths[idx]),
            size=int(sizes[idx]),
            channels=int(channels[idx]),
        )
        for idx in range(num_layers + 1)
    ]


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> Tensor | None:
    """Kaiser-windowed low-pass FIR: 1-D (separable) sinc, or 2-D jinc when ``radial``.

    None for a single tap (no filtering). ``width`` is the transition band width in Hz.
    """
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    coords = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(coords, coords))
    safe_radius = np.where(radius == 0, 1.0, radius)
    # The ideal radial low-pass of cutoff fc is jinc: J1(2 pi fc r) / (pi r), equal to fc at r=0.
    kernel = np.where(
        radius == 0,
        cutoff,
        scipy.special.j1(2 * np.pi * cutoff * safe_radius) / (np.pi * safe_radius),
    )
    attenuation = scipy.signal.kaiser_atten(numtaps, width / (fs / 2))
    window = scipy.signal.windows.kaiser(numtaps, scipy.signal.kaiser_beta(attenuation))
    kernel = kernel * np.outer(window, window)
    return torch.as_tensor(kernel / kernel.sum(), dtype=torch.float32)


class SynthesisInput(nn.Module):
    """Fourier features of random in-band frequencies, rotated and translated per sample by an
    affine of ws[0] (and by the user-settable ``transform``), then mixed by a 1x1 conv."""

    def __init__(
        self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: Tensor) -> Tensor:
        """[N, channels, size, size] features for ws[0] = ``w`` ([N, w_dim])."""
        batch = w.shape[0]
        params = self.affine(w)
        params = params / params[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = params.unbind(dim=1)
        rotation = torch.eye(3, device=w.device).repeat([batch, 1, 1])
        rotation[:, 0, 0], rotation[:, 0, 1] = cos, -sin
        rotation[:, 1, 0], rotation[:, 1, 1] = sin, cos
        translation = torch.eye(3, device=w.device).repeat([batch, 1, 1])
        translation[:, 0, 2], translation[:, 1, 2] = -tx, -ty
        transforms = rotation @ translation @ self.transform.unsqueeze(0)

        # Transforming the sampling grid is the same as transforming frequencies and phases.
        phases = self.phases.unsqueeze(0) + (self.freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs @ transforms[:, :2, :2]
        # Fade out frequencies that come close to the sampling rate's Nyquist limit.
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)

        extent = 0.5 * self.size / self.sampling_rate
        theta = torch.tensor([[extent, 0, 0], [0, extent, 0]], device=w.device)
        grid = F.affine_grid(
            theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False
        )  # [1, H, W, 2]
        x = torch.einsum("hwk,nck->nhwc", grid[0], freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
            f"sampling_rate={self.sampling_rate}, bandwidth={self.bandwidth}"
        )


class SynthesisLayer(nn.Module):
    """Modulated conv followed by the alias-free filtered leaky ReLU that resamples from the
    input's sampling rate to the output's (ToRGB: plain modulated 1x1 conv, linear).

    ``use_fp16``: compute in float16 on CUDA (weights cast per forward); ``conv_clamp`` bounds
    the activations in either precision, as in the reference.
    """

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        in_spec: LayerSpec,
        out_spec: LayerSpec,
        use_fp16: bool = False,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_spec.channels
        self.out_channels = out_spec.channels
        self.in_size = in_spec.size
        self.out_size = out_spec.size
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, self.in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([self.out_channels, self.in_channels, self.conv_kernel, self.conv_kernel])
        )
        self.bias = nn.Parameter(torch.zeros([self.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        tmp_sampling_rate = max(in_spec.sampling_rate, out_spec.sampling_rate) * (
            1 if is_torgb else lrelu_upsampling
        )
        self.up_factor = int(np.rint(tmp_sampling_rate / in_spec.sampling_rate))
        self.down_factor = int(np.rint(tmp_sampling_rate / out_spec.sampling_rate))
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.register_buffer(
            "up_filter",
            design_lowpass_filter(
                up_taps, in_spec.cutoff, in_spec.half_width * 2, tmp_sampling_rate
            ),
        )
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                down_taps,
                out_spec.cutoff,
                out_spec.half_width * 2,
                tmp_sampling_rate,
                radial=use_radial_filters and not is_critically_sampled,
            ),
        )

        # The conv is a full convolution (padding k - 1), so filtered_lrelu sees
        # in_size + k - 1 samples; pad so that its output has exactly out_size samples:
        # (in' * up + pad_total - (up_taps - 1) - (down_taps - 1) - 1) // down + 1 == out_size.
        conv_size = self.in_size + self.conv_kernel - 1
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total += up_taps + down_taps - 2 - conv_size * self.up_factor
        # Shifting by up/2 keeps the upsampled samples centred on the input's.
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = (pad_lo, pad_hi, pad_lo, pad_hi)
        self.gain = 1.0 if is_torgb else math.sqrt(2)
        self.slope = 1.0 if is_torgb else 0.2

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        update_emas: bool = False,
    ) -> Tensor:
        """[N, in_channels, in_size, in_size] -> [N, out_channels, out_size, out_size], in
        float16 for an fp16 layer on CUDA (unless ``force_fp32``), else float32."""
        check_noise_mode(noise_mode)
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel**2)
        dtype = layer_dtype(self.use_fp16, force_fp32, x.device)
        x = modulated_conv2d(
            x.to(dtype),
            self.weight,
            styles,
            padding=self.conv_kernel - 1,
            demodulate=not self.is_torgb,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        return filtered_lrelu(
            x,
            fu=self.up_filter,
            fd=self.down_filter,
            b=self.bias.to(x.dtype),
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=self.gain,
            slope=self.slope,
            clamp=self.conv_clamp,
        )

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}x{self.in_size}, out={self.out_channels}x{self.out_size}, "
            f"up={self.up_factor}, down={self.down_factor}, torgb={self.is_torgb}, "
            f"use_fp16={self.use_fp16}"
        )


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    padding: int,
    demodulate: bool = True,
    input_gain: Tensor | None = None,
) -> Tensor:
    """Per-sample conv with weights scaled by ``styles`` along input channels (and normalised
    to unit output variance when ``demodulate``), run as one grouped conv over the batch.

    With ``demodulate`` the weight (per output channel) and the styles are first scaled to unit
    RMS, as the reference does: demodulation cancels the scale, and the products stay in range
    for float16."""
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[0]
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain
    x = x.reshape(1, batch * in_channels, height, width)
    w = w.reshape(batch * out_channels, in_channels, *weight.shape[2:]).to(x.dtype)
    x = F.conv2d(x, w, padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, res, res]: Fourier input + layers."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,
        **layer_kwargs: object,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.output_scale = output_scale
        # Layers sampled above img_resolution / 2**num_fp16_res run in float16 on CUDA.
        self.num_fp16_res = num_fp16_res
        self.specs = layer_specs(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
        )
        first = self.specs[0]
        self.input = SynthesisInput(
            w_dim, first.channels, first.size, first.sampling_rate, first.cutoff
        )
        self.layer_names = []
        for spec in self.specs:
            layer = SynthesisLayer(
                w_dim,
                is_torgb=spec.index == num_layers,
                is_critically_sampled=spec.index >= num_layers - num_critical,
                in_spec=self.specs[max(spec.index - 1, 0)],
                out_spec=spec,
                use_fp16=spec.sampling_rate * 2**num_fp16_res > img_resolution,
                **layer_kwargs,
            )
            setattr(self, spec.name, layer)
            self.layer_names.append(spec.name)

    def forward(
        self,
        ws: Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        update_emas: bool = False,
    ) -> Tensor:
        """float32 images from ws; ws[:, 0] drives the input, ws[:, i + 1] layer L{i}.
        ``noise_mode`` is accepted and ignored, as by the official StyleGAN3."""
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:], strict=True):
            x = getattr(self, name)(
                x, w, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas
            )
        return (x * self.output_scale).to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}"
        )


class Generator(nn.Module):
    """z, c -> image: the mapping network followed by the synthesis network."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        **synthesis_kwargs: object,
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
            **synthesis_kwargs,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(
        self,
        z: Tensor,
        c: Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        noise_mode: str = "random",
        force_fp32: bool = False,
    ) -> Tensor:
        """[N, img_channels, img_resolution, img_resolution] float32 images for latents ``z``;
        the keywords are the official ones (``noise_mode`` is ignored by StyleGAN3)."""
        ws = self.mapping(
            z,
            c,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )
        return self.synthesis(
            ws, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas
        )
