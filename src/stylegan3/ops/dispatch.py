"""Pick the implementation of an op: the CUDA kernels or the pure-PyTorch reference path.

Every public op calls ``choose(impl, x)``; ``None`` means "run the reference function". The
environment variable ``TOONFORGE_OPS_IMPL=ref`` forces the reference everywhere, which is how
a run that suspects the kernels is checked against the reference without touching code.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import Tensor

IMPLS = ("auto", "ref", "cuda")
ENV_VAR = "TOONFORGE_OPS_IMPL"


class Kernels(Protocol):
    """What ``src.stylegan3.ops.cuda.get_kernels`` returns: the ops with normalised arguments."""

    def upfirdn2d(
        self,
        x: Tensor,
        f: Tensor,
        up: tuple[int, int],
        down: tuple[int, int],
        padding: tuple[int, int, int, int],
        flip_filter: bool,
        gain: float,
    ) -> Tensor: ...

    def bias_act(
        self,
        x: Tensor,
        b: Tensor | None,
        dim: int,
        act: str,
        alpha: float,
        gain: float,
        clamp: float | None,
    ) -> Tensor: ...

    def filtered_lrelu(
        self,
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
    ) -> Tensor: ...


def choose(impl: str, x: Tensor) -> Kernels | None:
    """The CUDA kernels to run the op on ``x`` with, or None for the reference path.

    ``auto`` uses the kernels for CUDA tensors when they build and pass their self-check,
    ``ref`` never does, ``cuda`` insists (and says why it cannot).
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: expected one of {', '.join(IMPLS)}")
    if reference_forced():
        return None
    if impl == "ref" or (impl == "auto" and not x.is_cuda):
        return None
    if not x.is_cuda:
        raise ValueError(
            f"impl='cuda' needs a CUDA tensor, got one on {x.device}: move the input to a GPU "
            "(x.cuda()) or pass impl='auto' (CUDA kernels when possible, else the reference)"
        )
    kernels, why_not = _load_kernels(x.device)
    if kernels is None and impl == "cuda":
        raise RuntimeError(
            f"impl='cuda': no CUDA kernels for {x.device}: {why_not}; pass impl='auto' to fall "
            f"back to the reference path, or set {ENV_VAR}=ref"
        )
    return kernels


def reference_forced() -> bool:
    """Whether ``TOONFORGE_OPS_IMPL=ref`` forces the reference path; other values are errors."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value not in ("", "ref"):
        raise ValueError(
            f"{ENV_VAR}={value!r} is not understood: set it to 'ref' or leave it unset"
        )
    return value == "ref"


def _load_kernels(device: torch.device) -> tuple[Kernels | None, str]:
    """The kernels for ``device``, or None and the reason (imported lazily: the build is slow)."""
    try:
        from src.stylegan3.ops.cuda import get_kernels
    except ImportError as error:
        return None, f"src.stylegan3.ops.cuda cannot be imported ({error})"
    kernels = get_kernels(device)
    if kernels is None:
        return None, "building or self-checking them failed (see the warning it printed)"
    return kernels, ""
