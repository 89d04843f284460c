"""Equalised-learning-rate building blocks shared by the StyleGAN3 generator and discriminator.

Weights are stored as unit-variance noise and scaled at run time by ``1/sqrt(fan_in)`` so every
layer learns at the same effective rate regardless of its size (Karras et al., ProGAN).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.stylegan3.ops import bias_act, downsample2d, setup_filter, upfirdn2d, upsample2d
from src.stylegan3.ops.bias_act import ACTIVATIONS
from src.stylegan3.precision import weight_memory_format


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale ``x`` so that its mean square along ``dim`` is one."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate and an optional fused activation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | list[float] = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(
            torch.randn([out_features, in_features]) * (weight_init / lr_multiplier)
        )
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias = nn.Parameter(torch.from_numpy(init / lr_multiplier))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """``act(x @ W^T + b)`` with the run-time learning-rate scaling applied."""
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and bias is not None:
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        return bias_act(x.matmul(weight.t()), bias, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """2-D convolution with equalised learning rate, optional FIR-filtered 2x downsampling (or,
    for 1x1 convs, upsampling), fused bias, activation and clamp (StyleGAN2's layer)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        resample_filter: list[float] | None = None,
        conv_clamp: float | None = None,
        up: int = 1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if down not in (1, 2) or up not in (1, 2) or (up > 1 and (down > 1 or kernel_size > 1)):
            raise ValueError(f"supported: down 1 or 2, or a 1x1 conv with up 2; got {up=} {down=}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.down = down
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter or [1, 3, 3, 1]))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].default_gain
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
                memory_format=weight_memory_format(channels_last)
            )
        )
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """Convolve (and downsample, or upsample), then bias, activation, ``gain`` and clamp, in
        ``x``'s dtype (the float32 weights are cast per call)."""
        weight = (self.weight * self.weight_gain).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.up == 2:
            # The StyleGAN2 generator's resnet skip: 1x1 conv, then FIR-filtered upsampling.
            x = upsample2d(F.conv2d(x, weight), self.resample_filter, up=2)
        elif self.down == 1:
            x = F.conv2d(x, weight, padding=self.padding)
        elif self.kernel_size == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter, down=2), weight)
        else:
            # Blur before the stride-2 conv so it sees a band-limited signal; these pads make the
            # output exactly half the input size.
            taps = self.resample_filter.shape[-1]
            pad0 = self.padding + (taps - 1) // 2
            pad1 = self.padding + (taps - 2) // 2
            x = upfirdn2d(x, self.resample_filter, padding=(pad0, pad1, pad0, pad1))
            x = F.conv2d(x, weight, stride=2)
        act_gain = self.act_gain * gain
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, bias, act=self.activation, gain=act_gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, "
            f"activation={self.activation}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """z (and class label c) -> w, broadcast to ``num_ws`` copies, with a tracked mean ``w_avg``
    that truncation pulls towards."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
    ) -> None:
        """``embed_features``, ``layer_features`` and ``activation`` are the StyleGAN2-ADA
        options (widths of the label embedding and hidden layers, default ``w_dim``)."""
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("the mapping network needs z_dim > 0 or c_dim > 0")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        hidden = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [hidden] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor | None,
        c: Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> Tensor:
        """[N, num_ws, w_dim] (or [N, w_dim] when ``num_ws`` is None)."""
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
