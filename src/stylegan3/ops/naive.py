"""The ops written the obvious, slow way, straight from their definitions.

Tests check the reference path against these and the benchmark measures its speed-up over them.
They take the normalised arguments of the ``*_ref`` functions (filters already float32 tensors,
``up``/``down`` as (x, y), ``padding`` as (x0, x1, y0, y1), alpha/gain/clamp resolved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def upfirdn2d(
    x: Tensor,
    f: Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> Tensor:
    """Zero insertion, padding/cropping, one full 2-D convolution, decimation by slicing."""
    batch, channels, height, width = x.shape
    (up_x, up_y), (down_x, down_y) = up, down
    px0, px1, py0, py1 = padding
    stuffed = x.new_zeros(batch, channels, height * up_y, width * up_x)
    stuffed[:, :, ::up_y, ::up_x] = x
    padded = F.pad(stuffed, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    padded = padded[
        :,
        :,
        max(-py0, 0) : padded.shape[2] - max(-py1, 0),
        max(-px0, 0) : padded.shape[3] - max(-px1, 0),
    ]
    f = f.to(torch.promote_types(f.dtype, x.dtype))
    if f.ndim == 1:
        f = torch.outer(f, f)
    f = (f * gain).to(x.dtype)
    if not flip_filter:  # conv2d correlates; flipping the filter makes it a true convolution
        f = f.flip([0, 1])
    images = padded.reshape(batch * channels, 1, *padded.shape[2:])
    filtered = F.conv2d(images, f[None, None])
    filtered = filtered.reshape(batch, channels, *filtered.shape[2:])
    return filtered[:, :, ::down_y, ::down_x]


def activation(x: Tensor, act: str, alpha: float) -> Tensor:
    """The closed-form formula of each activation (exp overflows beyond |x| ~ 80 in float32)."""
    if act == "linear":
        return x
    if act == "relu":
        return torch.where(x > 0, x, 0.0)
    if act == "lrelu":
        return torch.where(x > 0, x, alpha * x)
    if act == "tanh":
        return (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))
    if act == "sigmoid":
        return 1 / (1 + torch.exp(-x))
    if act == "elu":
        return torch.where(x > 0, x, torch.exp(x) - 1)
    if act == "selu":
        return SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1))
    if act == "softplus":
        return torch.log(1 + torch.exp(x))
    if act == "swish":
        return x / (1 + torch.exp(-x))
    raise ValueError(f"unknown activation {act!r}")


def bias_act(
    x: Tensor,
    b: Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
) -> Tensor:
    """``clamp(act(x + b) * gain)`` by the plain formula."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    y = activation(x, act, alpha) * gain
    return y if clamp is None else y.clamp(-clamp, clamp)


def filtered_lrelu(
    x: Tensor,
    fu: Tensor,
    fd: Tensor,
    b: Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
    flip_filter: bool,
) -> Tensor:
    """Bias, naive upsampling with ``fu``, leaky ReLU, gain, clamp, naive downsampling."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, (up, up), (1, 1), padding, flip_filter, up * up)
    x = bias_act(x, None, 1, "lrelu", slope, gain, clamp)
    return upfirdn2d(x, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1.0)
