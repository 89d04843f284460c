"""Autograd wrappers around the compiled CUDA ops, with the ops contract's normalised signatures.

- upfirdn2d: the gradient is upfirdn2d itself with up/down swapped, the filter flipped and the
  padding transposed, computed by the same Function, so gradients of any order work.
- bias_act: the backward pass is a Function of its own (first-derivative kernel) whose backward
  uses the second-derivative kernel, so first and second order work (third order raises).
- filtered_lrelu: composed of the two (bias, upsample with the gain, lrelu and clamp,
  downsample), so its gradients come from theirs; there is no fused kernel.

Filters are constants: no gradient flows to f, fu or fd.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd import Function

ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "lrelu": 2,
    "tanh": 3,
    "sigmoid": 4,
    "elu": 5,
    "selu": 6,
    "softplus": 7,
    "swish": 8,
}

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]


def transposed_padding(
    in_size: int, out_size: int, filter_size: int, up: int, down: int, pad0: int
) -> tuple[int, int]:
    """Padding (pad0, pad1) along one axis for the gradient of upfirdn2d: the upfirdn2d with
    up and down swapped and the filter flipped that maps an output-sized gradient back onto
    exactly the `in_size` input samples."""
    return filter_size - pad0 - 1, in_size * up - out_size * down + pad0 - up + 1


def _upfirdn2d_passes(
    ext: ModuleType,
    x: Tensor,
    f: Tensor,
    up: Pair,
    down: Pair,
    padding: Padding,
    flip_filter: bool,
    gain: float,
) -> Tensor:
    """One kernel launch for a 2-D filter; a 1-D (separable) filter runs along x, then y."""
    (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = up, down, padding
    if f.ndim == 2:
        return ext.upfirdn2d(
            x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain
        )
    rows = ext.upfirdn2d(
        x, f.unsqueeze(0), up_x, 1, down_x, 1, pad_x0, pad_x1, 0, 0, flip_filter, 1.0
    )
    return ext.upfirdn2d(
        rows, f.unsqueeze(1), 1, up_y, 1, down_y, 0, 0, pad_y0, pad_y1, flip_filter, gain
    )


class _Upfirdn2d(Function):
    @staticmethod
    def forward(ctx, ext, x, f, up, down, padding, flip_filter, gain):
        ctx.save_for_backward(f)
        ctx.ext = ext
        ctx.config = (up, down, padding, flip_filter, gain)
        ctx.in_size = x.shape[2:]
        return _upfirdn2d_passes(ext, x, f, up, down, padding, flip_filter, gain)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        (up_x, up_y), (down_x, down_y), padding, flip_filter, gain = ctx.config
        (in_h, in_w), (out_h, out_w) = ctx.in_size, dy.shape[2:]
        f_h, f_w = (f.shape[0], f.shape[0]) if f.ndim == 1 else f.shape
        pad_x = transposed_padding(in_w, out_w, f_w, up_x, down_x, padding[0])
        pad_y = transposed_padding(in_h, out_h, f_h, up_y, down_y, padding[2])
        dx = None
        if ctx.needs_input_grad[1]:
            dx = _Upfirdn2d.apply(
                ctx.ext,
                dy,
                f,
                (down_x, down_y),
                (up_x, up_y),
                (*pad_x, *pad_y),
                not flip_filter,
                gain,
            )
        return None, dx, None, None, None, None, None, None


def _bias_act_kernel(
    ext: ModuleType,
    x: Tensor,
    b: Tensor | None,
    grad: Tensor | None,
    order: int,
    config: tuple[int, str, float, float, float | None],
) -> Tensor:
    dim, act, alpha, gain, clamp = config
    clamp_arg = -1.0 if clamp is None else clamp
    return ext.bias_act(x, b, grad, dim, ACTIVATION_CODES[act], alpha, gain, clamp_arg, order)


def _bias_grad(grad: Tensor, b: Tensor, dim: int) -> Tensor:
    """Sum over every dimension except `dim` (in float32), in b's dtype."""
    other_dims = [d for d in range(grad.ndim) if d != dim]
    return grad.sum(dim=other_dims, dtype=torch.float32).to(b.dtype)


class _BiasAct(Function):
    @staticmethod
    def forward(ctx, ext, x, b, config):
        ctx.save_for_backward(x, b)
        ctx.ext = ext
        ctx.config = config
        return _bias_act_kernel(ext, x, b, None, 0, config)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dz = _BiasActGrad.apply(ctx.ext, dy, x, b, ctx.config)
        dx = dz if ctx.needs_input_grad[1] else None
        db = _bias_grad(dz, b, ctx.config[0]) if ctx.needs_input_grad[2] else None
        return None, dx, db, None


class _BiasActGrad(Function):
    """dz = dy * gain * act'(x + b) (zero where the clamp was hit); differentiable once more."""

    @staticmethod
    def forward(ctx, ext, dy, x, b, config):
        ctx.save_for_backward(dy, x, b)
        ctx.ext = ext
        ctx.config = config
        return _bias_act_kernel(ext, x, b, dy, 1, config)

    @staticmethod
    def backward(ctx, d_dz):
        dy, x, b = ctx.saved_tensors
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[1]:
            d_dy = _BiasActGrad.apply(ctx.ext, d_dz, x, b, ctx.config)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            second = _BiasActSecondGrad.apply(ctx.ext, d_dz * dy, x, b, ctx.config)
            d_x = second if ctx.needs_input_grad[2] else None
            d_b = _bias_grad(second, b, ctx.config[0]) if ctx.needs_input_grad[3] else None
        return None, d_dy, d_x, d_b, None


class _BiasActSecondGrad(Function):
    """grad * gain * act''(x + b); the end of the line for the CUDA path."""

    @staticmethod
    def forward(ctx, ext, grad, x, b, config):
        return _bias_act_kernel(ext, x, b, grad, 2, config)

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(
            "third-order gradients of bias_act are not implemented by the CUDA kernels; "
            "set TOONFORGE_OPS_IMPL=ref to use the PyTorch reference"
        )


class CudaKernels:
    """The CUDA implementations of the ops, with the contract's normalised signatures.

    The kernels handle float32, float16 and bfloat16; other dtypes (float64) go to the
    reference functions.
    """

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def upfirdn2d(
        self,
        x: Tensor,
        f: Tensor,
        up: Pair,
        down: Pair,
        padding: Padding,
        flip_filter: bool,
        gain: float,
    ) -> Tensor:
        """Upsample (zero insertion), pad, FIR-filter and downsample NCHW images."""
        if x.dtype not in KERNEL_DTYPES:
            from ..upfirdn2d import upfirdn2d_ref

            return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
        return _Upfirdn2d.apply(
            self.module,
            x,
            f,
            tuple(up),
            tuple(down),
            tuple(padding),
            bool(flip_filter),
            float(gain),
        )

    def bias_act(
        self,
        x: Tensor,
        b: Tensor | None,
        dim: int,
        act: str,
        alpha: float,
        gain: float,
        clamp: float | None,
    ) -> Tensor:
        """clamp(gain * act(x + b broadcast along dim)); b's dtype may differ from x's."""
        if act not in ACTIVATION_CODES:
            raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATION_CODES)}")
        if x.dtype not in KERNEL_DTYPES:
            from ..bias_act import bias_act_ref

            return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
        config = (
            dim % max(x.ndim, 1),
            act,
            float(alpha),
            float(gain),
            None if clamp is None else float(clamp),
        )
        return _BiasAct.apply(self.module, x, b, config)

    def filtered_lrelu(
        self,
        x: Tensor,
        fu: Tensor,
        fd: Tensor,
        b: Tensor | None,
        up: int,
        down: int,
        padding: Padding,
        gain: float,
        slope: float,
        clamp: float | None,
        flip_filter: bool,
    ) -> Tensor:
        """Bias, upsample with fu (gain up**2), multiply by gain, lrelu, clamp, downsample with
        fd. The gain rides on the upsampling pass, so a negative gain also comes before the
        lrelu."""
        if x.dtype not in KERNEL_DTYPES:
            from ..filtered_lrelu import filtered_lrelu_ref

            return filtered_lrelu_ref(
                x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter
            )
        if b is not None:
            x = self.bias_act(x, b, 1, "linear", 0.0, 1.0, None)
        x = self.upfirdn2d(x, fu, (up, up), (1, 1), padding, flip_filter, up * up * gain)
        x = self.bias_act(x, None, 1, "lrelu", slope, 1.0, clamp)
        return self.upfirdn2d(x, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1.0)
