"""filtered_lrelu: the alias-free nonlinearity of StyleGAN3.

Add the bias, upsample by ``up`` with the interpolation filter ``fu`` (gain up**2), leaky ReLU,
multiply by ``gain`` (after the activation, as bias_act does; the same as before it unless the
gain is negative), clamp, then low-pass with ``fd`` and keep every ``down``-th sample. The
reference path is built on upfirdn2d's and supports first-order gradients.

The intermediate is up**2 times larger than the input, so the reference path folds a
non-negative gain into ``fu``, activates in place where autograd allows, and on CPU runs
channels-last (converting a plain NCHW input and its output back costs less than the slower
convolutions would). It computes in the input's dtype.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

from src.stylegan3.ops import dispatch
from src.stylegan3.ops.upfirdn2d import (
    Padding,
    as_filter,
    get_filter_size,
    output_size,
    parse_padding,
    upfirdn2d_ref,
)


def filtered_lrelu(
    x: Tensor,
    fu: Tensor | None = None,
    fd: Tensor | None = None,
    b: Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: str = "auto",
) -> Tensor:
    """Bias, upsample with ``fu``, leaky ReLU, gain, clamp, downsample with ``fd`` (NCHW).

    ``fu``/``fd``: 1-D (separable) or 2-D float32 filters, None for identity. ``padding``: int,
    (x, y) or (x0, x1, y0, y1), applied before the upsampling filter. Output size per axis:
    ``(in * up + p0 + p1 - (fu_size - 1) - (fd_size - 1) + (down - 1)) // down``.
    """
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu needs an NCHW tensor, got shape {tuple(x.shape)}")
    up, down = operator.index(up), operator.index(down)
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    fu = as_filter(fu, x, identity_shape=(1,))
    fd = as_filter(fd, x, identity_shape=(1,))
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(
            f"the bias must be 1-D with {x.shape[1]} entries (channels), got {tuple(b.shape)}"
        )
    pads = parse_padding(padding)
    (fu_w, fu_h), (fd_w, fd_h) = get_filter_size(fu), get_filter_size(fd)
    out_w = output_size(x.shape[3], up, down, pads[0], pads[1], fu_w + fd_w - 1)
    out_h = output_size(x.shape[2], up, down, pads[2], pads[3], fu_h + fd_h - 1)
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"filtered_lrelu output would be {out_h}x{out_w} for input {tuple(x.shape[2:])}, "
            f"filters {tuple(fu.shape)} and {tuple(fd.shape)}, up {up}, down {down}, "
            f"padding {pads}"
        )
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    kernels = dispatch.choose(impl, x)
    run = filtered_lrelu_ref if kernels is None else kernels.filtered_lrelu
    return run(
        x,
        fu,
        fd,
        b,
        up=up,
        down=down,
        padding=pads,
        gain=float(gain),
        slope=float(slope),
        clamp=clamp,
        flip_filter=bool(flip_filter),
    )


def filtered_lrelu_ref(
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
    """Reference filtered_lrelu on normalised arguments; the result has ``x``'s memory format."""
    # oneDNN's depthwise convolutions run 2-3x faster channels-last; on the up**2 larger
    # intermediate that saves far more than converting the input and the output costs.
    convert = (
        x.device.type == "cpu"
        and x.is_contiguous()
        and not x.is_contiguous(memory_format=torch.channels_last)
    )
    y = x.contiguous(memory_format=torch.channels_last) if convert else x
    if b is not None:
        y = y + b.to(y.dtype).reshape(1, -1, 1, 1)
    # lrelu(z) * gain == lrelu(z * gain) for gain >= 0: such a gain rides along with fu's.
    fold_gain = gain >= 0
    up_gain = up * up * gain if fold_gain else up * up
    y = upfirdn2d_ref(y, fu, (up, up), (1, 1), padding, flip_filter, up_gain)
    y = _activate(y, slope, 1.0 if fold_gain else gain, clamp)
    y = upfirdn2d_ref(y, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1.0)
    return y.contiguous() if convert else y


def _activate(y: Tensor, slope: float, gain: float, clamp: float | None) -> Tensor:
    """Leaky ReLU, gain and clamp on an intermediate nobody else holds: in place unless autograd
    needs the values (clamp's input) or cannot differentiate in place (a negative slope)."""
    recording = torch.is_grad_enabled() and y.requires_grad
    y = F.leaky_relu(y, slope, inplace=slope >= 0 or not recording)
    if gain != 1:
        y = y * gain if recording else y.mul_(gain)
    if clamp is None:
        return y
    return y.clamp(-clamp, clamp) if recording else y.clamp_(-clamp, clamp)
