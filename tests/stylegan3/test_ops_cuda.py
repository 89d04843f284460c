"""The CUDA kernels against the PyTorch reference, on a GPU (skipped without one).

Covers every op with up/down 1, 2, 4, odd and even, 1-D and 2-D filters, positive and negative
padding, flip_filter, channels-last and strided inputs, all nine activations with and without
clamp, float16 and bfloat16 (float64 falls back to the reference), forward, backward and
(upfirdn2d, bias_act) second order.

Bounds, as max abs error: float32 <= 1e-5 * max(1, max |reference|) (the scale matters only for
big values such as bias gradients, which sum many terms); float16 <= 1e-2 and bfloat16
<= 2e-2 times max |reference|. The reference runs on CPU in float32 (no TF32) on the same
inputs, rounded to the tested dtype first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from src.stylegan3.ops.bias_act import bias_act_ref
from src.stylegan3.ops.cuda import CudaKernels, get_kernels
from src.stylegan3.ops.filtered_lrelu import filtered_lrelu_ref
from src.stylegan3.ops.upfirdn2d import upfirdn2d_ref

pytestmark = pytest.mark.cuda

DEVICE = torch.device("cuda")
REFERENCE = SimpleNamespace(
    upfirdn2d=upfirdn2d_ref, bias_act=bias_act_ref, filtered_lrelu=filtered_lrelu_ref
)
FP32_BOUND = 1e-5
LOW_PRECISION_BOUNDS = {torch.float16: 1e-2, torch.bfloat16: 2e-2}
ACTIVATIONS = ("linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish")
ALPHAS = {"lrelu": 0.2, "elu": 1.3}
FILTER_SHAPES = {(1, "even"): (4,), (1, "odd"): (5,), (2, "even"): (4, 6), (2, "odd"): (3, 5)}
PADDINGS = ((2, 1, 3, 0), (-1, 2, 1, -2), (0, 0, 0, 0), (3, 4, -2, 5))

Run = Callable[..., Tensor]


@pytest.fixture(scope="module")
def kernels() -> CudaKernels:
    found = get_kernels(DEVICE)
    if found is None:
        pytest.fail("get_kernels returned None on a CUDA machine; its warning says why")
    return found


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


def make_filter(shape: tuple[int, ...]) -> Tensor:
    """Random, asymmetric (so flips show), scaled to keep outputs around 1."""
    return torch.randn(shape) / torch.tensor(shape).prod().sqrt()


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    actual, expected = actual.detach().cpu().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.numel() == 0:
        return
    error = (actual - expected).abs().max().item()
    peak = expected.abs().max().item()
    if dtype == torch.float32:
        limit = FP32_BOUND * max(1.0, peak)
    else:
        limit = LOW_PRECISION_BOUNDS[dtype] * peak
    assert error <= limit, f"{what}: max abs error {error:.3g} > {limit:.3g} ({dtype})"


def compare(
    kernels: CudaKernels,
    run: Run,
    inputs: Sequence[Tensor],
    constants: Sequence[Tensor] = (),
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    backward: bool = True,
    second_order: bool = False,
) -> None:
    """`run(ops, *inputs, *constants)` with the CUDA kernels and with the reference: outputs,
    gradients w.r.t. `inputs` and, with `second_order`, the gradients of a weighted sum of
    those gradients w.r.t. `inputs` and the upstream gradient."""
    inputs = [t.to(dtype).float() for t in inputs]
    ref_leaves = [t.clone().requires_grad_() for t in inputs]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    dev_leaves = [
        t.to(DEVICE, dtype)
        .contiguous(memory_format=memory_format if t.ndim == 4 else torch.contiguous_format)
        .requires_grad_()
        for t in inputs
    ]
    expected = run(REFERENCE, *ref_leaves, *constants)
    actual = run(kernels, *dev_leaves, *(t.to(DEVICE) for t in constants))
    assert actual.device.type == "cuda" and actual.dtype == dtype
    if channels_last and actual.ndim == 4:
        assert actual.is_contiguous(memory_format=torch.channels_last)
    assert_close(actual, expected, dtype, "output")
    if not backward:
        return

    upstream = torch.randn(expected.shape).to(dtype).float()
    ref_upstream = upstream.clone().requires_grad_(second_order)
    dev_upstream = upstream.to(DEVICE, dtype).requires_grad_(second_order)
    expected_grads = torch.autograd.grad(
        expected, ref_leaves, ref_upstream, create_graph=second_order
    )
    actual_grads = torch.autograd.grad(actual, dev_leaves, dev_upstream, create_graph=second_order)
    for i, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        assert_close(a, e, dtype, f"gradient of input {i}")
    if not second_order:
        return

    weights = [torch.randn(t.shape) for t in inputs]
    expected_second = torch.autograd.grad(
        sum((g * w).sum() for g, w in zip(expected_grads, weights, strict=True)),
        [*ref_leaves, ref_upstream],
        allow_unused=True,
        materialize_grads=True,
    )
    actual_second = torch.autograd.grad(
        sum((g * w.to(DEVICE)).sum() for g, w in zip(actual_grads, weights, strict=True)),
        [*dev_leaves, dev_upstream],
        allow_unused=True,
        materialize_grads=True,
    )
    for i, (a, e) in enumerate(zip(actual_second, expected_second, strict=True)):
        assert_close(a, e, dtype, f"second-order gradient {i}")


def upfirdn2d_run(
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float = 1.0,
) -> Run:
    return lambda ops, x, f: ops.upfirdn2d(x, f, up, down, padding, flip_filter, gain)


def upfirdn2d_cases() -> list:
    """Every up x down in {1, 2, 4}^2 with a 1-D and a 2-D filter; filter parity, padding
    (positive and negative) and flip_filter vary along the list; plus unequal x/y factors."""
    cases = []
    combos = itertools.product((1, 2, 4), (1, 2, 4), (1, 2))
    for i, (up, down, ndim) in enumerate(combos):
        parity = "odd" if (i // 3) % 2 else "even"
        padding = PADDINGS[(i // 2) % len(PADDINGS)]
        flip = i % 3 == 0
        case_id = f"up{up}-down{down}-{ndim}d{parity}-pad{padding}-flip{int(flip)}"
        cases.append(
            pytest.param(
                (up, up), (down, down), FILTER_SHAPES[ndim, parity], padding, flip, id=case_id
            )
        )
    cases.append(pytest.param((2, 1), (1, 4), (5,), (1, 2, 0, -1), False, id="up21-down14-1dodd"))
    cases.append(pytest.param((4, 2), (2, 1), (3, 4), (-2, 3, 2, 2), True, id="up42-down21-2deven"))
    return cases


@pytest.mark.parametrize(
    ("up", "down", "filter_shape", "padding", "flip_filter"), upfirdn2d_cases()
)
def test_upfirdn2d_float32_up_to_second_order(
    kernels: CudaKernels, up, down, filter_shape, padding, flip_filter
) -> None:
    compare(
        kernels,
        upfirdn2d_run(up, down, padding, flip_filter, gain=1.5),
        [torch.randn(2, 3, 11, 12)],
        [make_filter(filter_shape)],
        second_order=True,
    )


@pytest.mark.parametrize(
    ("up", "down", "filter_shape", "padding"),
    [
        ((2, 2), (1, 1), (4,), (2, 1, 2, 1)),
        ((1, 1), (2, 2), (3, 5), (1, 1, 2, 2)),
        ((4, 4), (2, 2), (8,), (-1, 3, 4, -2)),
    ],
)
def test_upfirdn2d_channels_last(kernels: CudaKernels, up, down, filter_shape, padding) -> None:
    compare(
        kernels,
        upfirdn2d_run(up, down, padding, False),
        [torch.randn(2, 5, 9, 10)],
        [make_filter(filter_shape)],
        channels_last=True,
        second_order=True,
    )


def test_upfirdn2d_strided_input(kernels: CudaKernels) -> None:
    def run(ops, x, f):
        return ops.upfirdn2d(x[:, 1:, ::2, 1::3], f, (2, 2), (1, 1), (1, 2, 2, 1), False, 1.0)

    compare(kernels, run, [torch.randn(2, 4, 14, 15)], [make_filter((4,))], second_order=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("up", "down", "filter_shape", "padding"),
    [((2, 2), (1, 1), (6,), (3, 2, 3, 2)), ((1, 1), (2, 2), (4, 3), (1, 1, 1, 1))],
)
def test_upfirdn2d_low_precision(kernels: CudaKernels, dtype, up, down, filter_shape, padding):
    compare(
        kernels,
        upfirdn2d_run(up, down, padding, True),
        [torch.randn(2, 3, 10, 9)],
        [make_filter(filter_shape)],
        dtype=dtype,
    )


def test_upfirdn2d_more_outputs_than_one_grid(kernels: CudaKernels) -> None:
    """Over 65536 blocks x 256 threads of outputs: the kernel's grid-stride loop covers all."""
    compare(
        kernels,
        upfirdn2d_run((1, 1), (1, 1), (1, 1, 1, 1), False),
        [torch.randn(1, 17, 1024, 1024)],
        [make_filter((3, 3))],
        backward=False,
    )


def bias_act_run(
    act: str, clamp: float | None, dim: int = 1, gain: float = 1.5, sliced: bool = False
) -> Run:
    def run(ops, x, *b):
        if sliced:
            x = x[:, :, ::2]
        return ops.bias_act(x, b[0] if b else None, dim, act, ALPHAS.get(act, 0.0), gain, clamp)

    return run


@pytest.mark.parametrize("clamp", [None, 1.0], ids=["noclamp", "clamp"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_bias_act_float32_up_to_second_order(kernels: CudaKernels, act: str, clamp) -> None:
    compare(
        kernels,
        bias_act_run(act, clamp),
        [torch.randn(2, 5, 4, 6) * 2, torch.randn(5)],
        second_order=True,
    )


@pytest.mark.parametrize(
    ("layout", "shape", "dim", "with_bias"),
    [
        ("channels-last", (2, 5, 4, 6), 1, True),
        ("strided", (2, 5, 8, 6), 1, True),
        ("dense-layer", (6, 5), 1, True),
        ("last-dim", (2, 3, 4, 5), 3, True),
        ("first-dim", (4, 7), 0, True),
        ("no-bias", (2, 5, 4, 6), 1, False),
    ],
)
@pytest.mark.parametrize("act", ["lrelu", "swish"])
def test_bias_act_layouts(kernels: CudaKernels, act, layout, shape, dim, with_bias) -> None:
    inputs = [torch.randn(shape) * 2]
    if with_bias:
        inputs.append(torch.randn(shape[dim]))
    compare(
        kernels,
        bias_act_run(act, 1.0, dim=dim, sliced=layout == "strided"),
        inputs,
        channels_last=layout == "channels-last",
        second_order=True,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish", "softplus"])
def test_bias_act_low_precision(kernels: CudaKernels, act: str, dtype) -> None:
    compare(
        kernels,
        bias_act_run(act, 1.0),
        [torch.randn(2, 5, 4, 6) * 2, torch.randn(5)],
        dtype=dtype,
    )


def test_bias_act_more_elements_than_one_grid(kernels: CudaKernels) -> None:
    compare(
        kernels,
        bias_act_run("lrelu", 0.8),
        [torch.randn(2, 8, 1100, 1000), torch.randn(8)],
        backward=False,
    )


def test_bias_act_third_order_raises(kernels: CudaKernels) -> None:
    x = torch.randn(3, 4, device=DEVICE, requires_grad=True)
    y = kernels.bias_act(x, None, 1, "tanh", 0.0, 1.0, None)
    (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order"):
        torch.autograd.grad(second.sum(), x)


def filtered_lrelu_run(up: int, down: int, padding, flip_filter: bool, clamp=1.0) -> Run:
    def run(ops, x, b, fu, fd):
        return ops.filtered_lrelu(x, fu, fd, b, up, down, padding, 2**0.5, 0.2, clamp, flip_filter)

    return run


def filtered_lrelu_cases() -> list:
    cases = []
    for i, (up, down, ndim) in enumerate(itertools.product((1, 2, 4), (1, 2, 4), (1, 2))):
        fu_shape = (6,) if ndim == 1 else (5, 4)
        fd_shape = (5,) if ndim == 1 else (4, 3)
        flip = i % 3 == 0
        case_id = f"up{up}-down{down}-{ndim}d-flip{int(flip)}"
        cases.append(pytest.param(up, down, fu_shape, fd_shape, flip, id=case_id))
    return cases


@pytest.mark.parametrize(
    ("up", "down", "fu_shape", "fd_shape", "flip_filter"), filtered_lrelu_cases()
)
def test_filtered_lrelu_float32(kernels: CudaKernels, up, down, fu_shape, fd_shape, flip_filter):
    compare(
        kernels,
        filtered_lrelu_run(up, down, (4, 3, 2, 5), flip_filter),
        [torch.randn(2, 3, 8, 7), torch.randn(3)],
        [make_filter(fu_shape), make_filter(fd_shape)],
    )


def test_filtered_lrelu_channels_last_without_bias_or_clamp(kernels: CudaKernels) -> None:
    def run(ops, x, fu, fd):
        return ops.filtered_lrelu(x, fu, fd, None, 2, 2, (5, 5, 5, 5), 2**0.5, 0.2, None, False)

    compare(
        kernels,
        run,
        [torch.randn(2, 6, 9, 8)],
        [make_filter((12,)), make_filter((12,))],
        channels_last=True,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_filtered_lrelu_low_precision_forward(kernels: CudaKernels, dtype) -> None:
    """Forward only: rounding between the composed steps can move values across the lrelu kink or
    the clamp, where the gradient jumps, so low-precision gradients are not comparable."""
    compare(
        kernels,
        filtered_lrelu_run(2, 2, (5, 5, 5, 5), False),
        [torch.randn(2, 3, 8, 8), torch.randn(3)],
        [make_filter((12,)), make_filter((12,))],
        dtype=dtype,
        backward=False,
    )


def test_float64_goes_to_the_reference(kernels: CudaKernels) -> None:
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    f = make_filter((4,))
    expected = upfirdn2d_ref(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 1.0)
    actual = kernels.upfirdn2d(x.to(DEVICE), f.to(DEVICE), (2, 2), (1, 1), (2, 1, 2, 1), False, 1.0)
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual.cpu(), expected)
    y = kernels.bias_act(x.to(DEVICE), None, 1, "tanh", 0.0, 1.0, None)
    assert y.dtype == torch.float64


def test_get_kernels_is_cached_per_device(kernels: CudaKernels) -> None:
    index = torch.cuda.current_device()
    assert get_kernels(torch.device("cuda", index)) is kernels
    assert get_kernels(torch.device("cpu")) is None


def test_bad_arguments_raise_clearly(kernels: CudaKernels) -> None:
    x = torch.randn(1, 1, 2, 2, device=DEVICE)
    with pytest.raises(RuntimeError, match="smaller than the filter"):
        kernels.upfirdn2d(x, torch.ones(5, device=DEVICE), (1, 1), (1, 1), (0, 0, 0, 0), False, 1)
    with pytest.raises(ValueError, match="unknown activation"):
        kernels.bias_act(x, None, 1, "gelu", 0.0, 1.0, None)
