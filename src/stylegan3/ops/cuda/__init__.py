"""CUDA path of the StyleGAN3 ops: ``get_kernels(device)`` builds, self-checks and hands out
the kernels (``src.stylegan3.ops.dispatch`` calls it).

Nothing here raises on a missing toolkit, failed build or wrong result: one warning per
process names the problem and its fix, and ``get_kernels`` returns None so that the caller
falls back to the PyTorch reference. ``TOONFORGE_OPS_IMPL=ref`` skips all of it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace

import torch
from torch import Tensor

from src.stylegan3.ops.cuda.kernels import CudaKernels
from src.stylegan3.ops.dispatch import reference_forced

__all__ = ["CudaKernels", "get_kernels", "self_check"]

SELF_CHECK_TOLERANCE = 1e-4  # max abs error relative to the reference's max abs value


@dataclass
class _State:
    """Per-process memory: modules by architecture, kernels by device, warnings given."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    modules: dict[str, ModuleType | None] = field(default_factory=dict)
    kernels: dict[torch.device, CudaKernels | None] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)


_state = _State()


def _warn_once(key: str, message: str, stacklevel: int) -> None:
    """Warn the first time `key` comes up in this process; `stacklevel` counts from the caller."""
    if key not in _state.warned:
        _state.warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


def _module_for(arch: str) -> ModuleType | None:
    # Imported here, not at the top, so that `python -m src.stylegan3.ops.cuda.build` runs
    # build.py once, as __main__ only.
    from .build import build_extension

    if arch not in _state.modules:
        try:
            _state.modules[arch] = build_extension(arch)
        except Exception as error:  # BuildError or an unexpected failure: never fatal here
            _state.modules[arch] = None
            _warn_once(
                "build",
                "toonforge CUDA ops unavailable, using the slower PyTorch reference: "
                f"{error}\n(TOONFORGE_OPS_IMPL=ref skips the CUDA build)",
                stacklevel=3,
            )
    return _state.modules[arch]


def get_kernels(device: torch.device) -> CudaKernels | None:
    """The CUDA kernels for `device`, or None when they cannot be used there.

    Builds the extension once per process (cached on disk across processes), then before the
    first use on each device compares every op against the reference on that device.
    """
    if reference_forced():
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with _state.lock:
        if device in _state.kernels:
            return _state.kernels[device]
        major, minor = torch.cuda.get_device_capability(device)
        module = _module_for(f"{major}.{minor}")
        kernels = None
        if module is not None:
            kernels = CudaKernels(module)
            try:
                problem = self_check(kernels, device)
            except Exception as error:  # e.g. the reference ops cannot be imported
                problem = f"the check itself: {type(error).__name__}: {error}"
            if problem is not None:
                kernels = None
                _warn_once(
                    f"self-check {device}",
                    f"toonforge CUDA ops disabled on {device}, using the PyTorch reference: "
                    f"self-check against the reference failed for {problem}",
                    stacklevel=2,
                )
        _state.kernels[device] = kernels
        return kernels


def _relative_error(actual: Tensor, expected: Tensor) -> float:
    actual, expected = actual.detach().cpu().float(), expected.detach().float()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def _compare(
    name: str,
    run: Callable[..., Tensor],
    kernels: CudaKernels,
    reference: SimpleNamespace,
    differentiable: Sequence[Tensor],
    constants: Sequence[Tensor],
    device: torch.device,
) -> str | None:
    """`run(ops, *differentiable, *constants)` with the kernels on `device` against the
    reference on CPU (float32 there: no TF32 to blur the comparison), output and gradients."""
    ref_leaves = [t.clone().requires_grad_() for t in differentiable]
    dev_leaves = [t.to(device).requires_grad_() for t in differentiable]
    try:
        expected = run(reference, *ref_leaves, *constants)
        actual = run(kernels, *dev_leaves, *(t.to(device) for t in constants))
        upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
        expected_grads = torch.autograd.grad(expected, ref_leaves, upstream)
        actual_grads = torch.autograd.grad(actual, dev_leaves, upstream.to(device))
        torch.cuda.synchronize(device)
    except Exception as error:
        return f"{name}: {type(error).__name__}: {error}"
    results = [("output", actual, expected)]
    results += [
        (f"gradient of input {i}", a, e)
        for i, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True))
    ]
    for what, a, e in results:
        if a.shape != e.shape:
            return f"{name}: {what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        error = _relative_error(a, e)
        if not error <= SELF_CHECK_TOLERANCE:  # also catches NaN
            return f"{name}: {what} differs from the reference, relative error {error:.2e}"
    return None


def self_check(kernels: CudaKernels, device: torch.device) -> str | None:
    """Runs each op (forward and backward, float32, small random inputs) on `device` and
    compares with the reference: None when all match, else '<op>: <what differs>'."""
    from ..bias_act import bias_act_ref
    from ..filtered_lrelu import filtered_lrelu_ref
    from ..upfirdn2d import upfirdn2d_ref

    reference = SimpleNamespace(
        upfirdn2d=upfirdn2d_ref, bias_act=bias_act_ref, filtered_lrelu=filtered_lrelu_ref
    )
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator)

    # (op, run(ops, *differentiable, *constants), differentiable inputs, constant inputs)
    cases = [
        (
            "upfirdn2d",
            lambda ops, x, f: ops.upfirdn2d(x, f, (2, 1), (1, 2), (2, 1, -1, 3), False, 1.5),
            [randn(2, 3, 9, 10)],
            [randn(4, 3)],
        ),
        (
            "upfirdn2d",
            lambda ops, x, f: ops.upfirdn2d(x, f, (2, 2), (2, 2), (3, 2, 2, 3), True, 2.0),
            [randn(2, 3, 8, 7)],
            [randn(6)],
        ),
        (
            "bias_act",
            lambda ops, x, b: ops.bias_act(x, b, 1, "lrelu", 0.2, 2**0.5, 1.0),
            [randn(2, 5, 4, 3), randn(5)],
            [],
        ),
        (
            "bias_act",
            lambda ops, x, b: ops.bias_act(x, b, 1, "swish", 0.0, 1.0, None),
            [randn(2, 5, 4, 3), randn(5)],
            [],
        ),
        (
            "filtered_lrelu",
            lambda ops, x, b, fu, fd: ops.filtered_lrelu(
                x, fu, fd, b, 2, 2, (5, 5, 5, 5), 2**0.5, 0.2, 2.0, False
            ),
            [randn(2, 3, 8, 8), randn(3)],
            [randn(6) / 3, randn(6) / 3],
        ),
    ]
    for name, run, differentiable, constants in cases:
        problem = _compare(name, run, kernels, reference, differentiable, constants, device)
        if problem is not None:
            return problem
    return None
