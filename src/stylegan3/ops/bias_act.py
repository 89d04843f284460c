"""bias_act: add a bias along one dimension, apply an activation, scale by a gain and clamp.

StyleGAN layers end with this; the reference path is plain PyTorch, differentiable to any order
(lazy R1 regularisation differentiates through the discriminator's gradients). It computes in
the input's dtype (the bias is cast to it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch.nn.functional as F
from torch import Tensor

from src.stylegan3.ops import dispatch


@dataclass(frozen=True)
class Activation:
    """An activation ``func(x, alpha)`` and the alpha and gain it gets when none is given.

    The table is NVIDIA's (``torch_utils/ops/bias_act.py``), so that networks ported from it run
    the same: only lrelu reads alpha (elu is always alpha 1), and relu, lrelu and swish default
    to a gain of sqrt(2).
    """

    func: Callable[[Tensor, float], Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: Mapping[str, Activation] = MappingProxyType(
    {
        "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
        "relu": Activation(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
        "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
        "tanh": Activation(lambda x, alpha: x.tanh(), 0.0, 1.0),
        "sigmoid": Activation(lambda x, alpha: x.sigmoid(), 0.0, 1.0),
        "elu": Activation(lambda x, alpha: F.elu(x), 0.0, 1.0),
        "selu": Activation(lambda x, alpha: F.selu(x), 0.0, 1.0),
        "softplus": Activation(lambda x, alpha: F.softplus(x), 0.0, 1.0),
        "swish": Activation(lambda x, alpha: F.silu(x), 0.0, math.sqrt(2)),
    }
)


def bias_act(
    x: Tensor,
    b: Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> Tensor:
    """``clamp(act(x + b, alpha) * gain)``, with ``b`` (1-D) broadcast along ``dim``.

    ``alpha``/``gain`` default per activation (see ACTIVATIONS); ``clamp`` None or negative means
    no clamping. ``impl``: 'auto', 'ref' or 'cuda' (see ``dispatch.choose``).
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}: expected one of {', '.join(ACTIVATIONS)}")
    if -x.ndim <= dim < x.ndim:
        dim %= x.ndim
    elif b is not None:  # without a bias, dim plays no part
        raise ValueError(f"dim {dim} is out of range for a {x.ndim}-D input")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(
            f"the bias must be 1-D with x.shape[{dim}] = {x.shape[dim]} entries, "
            f"got shape {tuple(b.shape)}"
        )
    spec = ACTIVATIONS[act]
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    kernels = dispatch.choose(impl, x)
    run = bias_act_ref if kernels is None else kernels.bias_act
    return run(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_ref(
    x: Tensor,
    b: Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
) -> Tensor:
    """Reference bias_act on normalised arguments (defaults applied, clamp None = no clamp)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = ACTIVATIONS[act].func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
