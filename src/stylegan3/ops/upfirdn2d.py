"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of images in one op.

Semantics (StyleGAN2-ADA / StyleGAN3): insert ``up - 1`` zeros between samples, pad by
``[x0, x1, y0, y1]`` (negative pads crop), convolve with ``f`` (true convolution; correlation
with ``flip_filter=True``), keep every ``down``-th sample. A 1-D ``f`` is separable.

The reference path never builds the zero-stuffed image nor computes samples the decimation would
drop. Per axis, ``up`` and ``down`` are divided by their gcd ``g``: only one of the ``g``
polyphase components of the filter ever meets a non-zero sample, so it is picked out and the
problem shrinks to coprime factors. What is left is a depthwise conv2d strided by ``down``
(nothing to upsample) or a depthwise conv_transpose2d strided by ``up`` (nothing to drop); only
coprime factors both above 1 (never used by StyleGAN) compute the ``down``-fold intermediate.
Separable filters run as a (1, k) pass along x, then a (k, 1) pass along y.

Precision: computed in the input's dtype (fp16/bf16 included); the filter is scaled by the gain
in float32 (float64 for float64 inputs), then cast to it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.stylegan3.ops import dispatch

Scaling = int | Sequence[int]
Padding = int | Sequence[int]
FilterLike = Tensor | np.ndarray | Sequence[float] | float | None


def _ints(value: int | Sequence[int], name: str) -> tuple[int, ...]:
    items = value if isinstance(value, Sequence) else (value,)
    try:
        return tuple(operator.index(item) for item in items)
    except TypeError:
        raise ValueError(f"{name} must be integers, got {value!r}") from None


def parse_scaling(scaling: Scaling) -> tuple[int, int]:
    """(x, y) factors from an int or an (x, y) pair; each must be >= 1."""
    values = _ints(scaling, "scaling")
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"scaling must be an int >= 1 or an (x, y) pair of them, got {scaling!r}")
    return (values[0], values[-1])


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, an (x, y) pair or the four values."""
    values = _ints(padding, "padding")
    if len(values) == 1:
        return (values[0],) * 4
    if len(values) == 2:
        return (values[0], values[0], values[1], values[1])
    if len(values) == 4:
        return (values[0], values[1], values[2], values[3])
    raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1), got {padding!r}")


def get_filter_size(f: Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; a 1-D filter is separable, so it is k by k."""
    if f is None:
        return (1, 1)
    if f.ndim not in (1, 2):
        raise ValueError(f"a filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    return (f.shape[-1], f.shape[0])


def setup_filter(
    f: FilterLike,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> Tensor:
    """A float32 filter ready for upfirdn2d: normalised to sum 1 and scaled so its total gain is
    ``gain``. ``separable`` defaults to "1-D with 8 taps or more"; a 1-D filter that is not
    separable becomes its outer product.
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim > 2 or f.numel() == 0:
        raise ValueError(f"a filter must be a non-empty scalar, 1-D or 2-D, got {tuple(f.shape)}")
    f = f.reshape(1) if f.ndim == 0 else f
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError("a 2-D filter cannot be separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return (f * gain ** (f.ndim / 2)).to(device)


def output_size(size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Samples along one axis after upsampling, padding, filtering with ``taps`` and decimation."""
    return (size * up + pad0 + pad1 - taps + down) // down


def upfirdn2d(
    x: Tensor,
    f: Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> Tensor:
    """Upsample ``x`` (NCHW) by zero insertion, pad, convolve with ``f``, downsample.

    ``f``: 1-D (separable) or 2-D float32 filter, None for identity. ``up``/``down``: int or
    (x, y). ``padding``: int, (x, y) or (x0, x1, y0, y1); negative values crop. Differentiable
    to any order. ``impl``: 'auto', 'ref' or 'cuda' (see ``dispatch.choose``).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d needs an NCHW tensor, got shape {tuple(x.shape)}")
    f = as_filter(f, x, identity_shape=(1, 1))
    up_xy, down_xy, pads = parse_scaling(up), parse_scaling(down), parse_padding(padding)
    out_h, out_w = _output_hw(x, f, up_xy, down_xy, pads)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"upfirdn2d output would be {out_h}x{out_w} for input {tuple(x.shape[2:])}, "
            f"filter {tuple(f.shape)}, up {up_xy}, down {down_xy}, padding {pads}"
        )
    kernels = dispatch.choose(impl, x)
    run = upfirdn2d_ref if kernels is None else kernels.upfirdn2d
    return run(
        x, f, up=up_xy, down=down_xy, padding=pads, flip_filter=bool(flip_filter), gain=float(gain)
    )


def as_filter(f: Tensor | None, x: Tensor, identity_shape: tuple[int, ...]) -> Tensor:
    """``f`` as a float32 tensor on ``x``'s device (None: a one-tap identity of that shape)."""
    if f is None:
        return torch.ones(identity_shape, dtype=torch.float32, device=x.device)
    f = torch.as_tensor(f).to(device=x.device, dtype=torch.float32)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"a filter must be non-empty 1-D or 2-D, got shape {tuple(f.shape)}")
    return f


def _output_hw(
    x: Tensor,
    f: Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> tuple[int, int]:
    width, height = get_filter_size(f)
    return (
        output_size(x.shape[2], up[1], down[1], padding[2], padding[3], height),
        output_size(x.shape[3], up[0], down[0], padding[0], padding[1], width),
    )


def upfirdn2d_ref(
    x: Tensor,
    f: Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> Tensor:
    """Reference upfirdn2d on normalised arguments, computed in ``x``'s memory format.

    Channels-last inputs run 2-3x faster on CPU (oneDNN's depthwise convolutions prefer it);
    converting an NCHW input and the result back costs about as much as that saves, so it is
    left to the caller.
    """
    # The passes below compute true convolutions; correlating with f is convolving with f flipped.
    kernel = f.to(torch.promote_types(f.dtype, x.dtype))
    if flip_filter:
        kernel = kernel.flip(list(range(kernel.ndim)))
    if kernel.ndim == 2:
        return _resample(x, (kernel * gain).to(x.dtype), up, down, padding)
    # Separable: the whole gain goes into the x pass, which also keeps negative gains exact.
    x = _resample(
        x, (kernel * gain).to(x.dtype)[None, :], (up[0], 1), (down[0], 1), (*padding[:2], 0, 0)
    )
    return _resample(x, kernel.to(x.dtype)[:, None], (1, up[1]), (1, down[1]), (0, 0, *padding[2:]))


class _AxisPlan(NamedTuple):
    """One axis of upfirdn2d, reduced to coprime factors.

    ``out[m] = sum_i x[i] * w[m * down + offset - i * up]`` for m < out_size, where
    ``w = kernel[phase::step]`` is the filter's polyphase component that meets the samples.
    """

    phase: int
    step: int
    up: int
    down: int
    offset: int
    out_size: int

    @property
    def span(self) -> int:
        """Length of the stretch of the full convolution that the output samples cover."""
        return (self.out_size - 1) * self.down + 1


def _plan_axis(size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> _AxisPlan:
    # Output m is sample m * down + taps - 1 - pad0 of the full convolution of the zero-stuffed
    # input with the filter; splitting that index by the gcd leaves a fixed filter phase.
    step = math.gcd(up, down)
    offset, phase = divmod(taps - 1 - pad0, step)
    out_size = output_size(size, up, down, pad0, pad1, taps)
    return _AxisPlan(phase, step, up // step, down // step, offset, out_size)


def _resample(
    x: Tensor,
    kernel: Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> Tensor:
    """upfirdn2d with a 2-D ``kernel`` in convolution orientation, gain already applied."""
    channels, height, width = x.shape[1:]
    plan_x = _plan_axis(width, up[0], down[0], padding[0], padding[1], kernel.shape[1])
    plan_y = _plan_axis(height, up[1], down[1], padding[2], padding[3], kernel.shape[0])
    kernel = kernel[plan_y.phase :: plan_y.step, plan_x.phase :: plan_x.step]
    if kernel.numel() == 0:  # the filter is shorter than the gcd: only zeros meet it
        kernel = kernel.new_zeros(1, 1)
    taps_y, taps_x = kernel.shape

    if plan_x.up == 1 and plan_y.up == 1:
        # out[m] = sum_j x[m * down + j - lo] * kernel[taps - 1 - j]: a strided correlation of x,
        # zero-extended by lo before and hi after, with the flipped kernel.
        lo_x = taps_x - 1 - plan_x.offset
        hi_x = plan_x.span + taps_x - 1 - width - lo_x
        lo_y = taps_y - 1 - plan_y.offset
        hi_y = plan_y.span + taps_y - 1 - height - lo_y
        pad_x, pad_y = max(0, min(lo_x, hi_x)), max(0, min(lo_y, hi_y))
        x = _window(x, pad_y - lo_y, height + hi_y - pad_y, pad_x - lo_x, width + hi_x - pad_x)
        weight = kernel.flip([0, 1]).expand(channels, 1, taps_y, taps_x)
        return F.conv2d(
            x, weight, stride=(plan_y.down, plan_x.down), padding=(pad_y, pad_x), groups=channels
        )

    # conv_transpose2d with stride up is the full convolution of the zero-stuffed x with the
    # kernel; its padding argument trims both ends, the window the rest.
    full_x, full_y = (width - 1) * plan_x.up + taps_x, (height - 1) * plan_y.up + taps_y
    trim_x = max(0, min(plan_x.offset, full_x - plan_x.offset - plan_x.span))
    trim_y = max(0, min(plan_y.offset, full_y - plan_y.offset - plan_y.span))
    weight = kernel.expand(channels, 1, taps_y, taps_x)
    y = F.conv_transpose2d(
        x, weight, stride=(plan_y.up, plan_x.up), padding=(trim_y, trim_x), groups=channels
    )
    start_x, start_y = plan_x.offset - trim_x, plan_y.offset - trim_y
    y = _window(y, start_y, start_y + plan_y.span, start_x, start_x + plan_x.span)
    if plan_x.down > 1 or plan_y.down > 1:
        y = y[:, :, :: plan_y.down, :: plan_x.down]
    # Crops and decimation are views: copy them into a dense tensor in the input's layout.
    return y.contiguous(memory_format=_layout(x))


def _layout(x: Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _window(x: Tensor, start_y: int, stop_y: int, start_x: int, stop_x: int) -> Tensor:
    """Rows [start_y, stop_y) and columns [start_x, stop_x) of ``x`` extended by zeros."""
    pads: list[int] = []
    for dim, start, stop in ((3, start_x, stop_x), (2, start_y, stop_y)):
        size = x.shape[dim]
        keep_from, keep_to = min(max(start, 0), size), min(max(stop, 0), size)
        if keep_to <= keep_from:
            keep_from = keep_to = 0
        if keep_to - keep_from < size:
            x = x.narrow(dim, keep_from, keep_to - keep_from)
        pad_before = keep_from - start if keep_to > keep_from else stop - start
        pads += [pad_before, stop - start - pad_before - (keep_to - keep_from)]
    return F.pad(x, pads) if any(pads) else x


def filter2d(
    x: Tensor,
    f: Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> Tensor:
    """Filter ``x`` with ``f``, padded so the output has the input's size (plus ``padding``)."""
    px0, px1, py0, py1 = parse_padding(padding)
    width, height = get_filter_size(f)
    pads = (px0 + width // 2, px1 + (width - 1) // 2, py0 + height // 2, py1 + (height - 1) // 2)
    return upfirdn2d(x, f, padding=pads, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: Tensor,
    f: Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> Tensor:
    """Upsample ``x`` by ``up`` with the interpolation filter ``f``: output = input * up.

    The gain is multiplied by up_x * up_y to make up for the inserted zeros.
    """
    up_x, up_y = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    width, height = get_filter_size(f)
    pads = (
        px0 + (width + up_x - 1) // 2,
        px1 + (width - up_x) // 2,
        py0 + (height + up_y - 1) // 2,
        py1 + (height - up_y) // 2,
    )
    gain = gain * up_x * up_y
    return upfirdn2d(
        x, f, up=(up_x, up_y), padding=pads, flip_filter=flip_filter, gain=gain, impl=impl
    )


def downsample2d(
    x: Tensor,
    f: Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> Tensor:
    """Low-pass ``x`` with ``f`` and keep every ``down``-th sample: output = input / down."""
    down_x, down_y = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    width, height = get_filter_size(f)
    pads = (
        px0 + (width - down_x + 1) // 2,
        px1 + (width - down_x) // 2,
        py0 + (height - down_y + 1) // 2,
        py1 + (height - down_y) // 2,
    )
    return upfirdn2d(
        x, f, down=(down_x, down_y), padding=pads, flip_filter=flip_filter, gain=gain, impl=impl
    )
