"""The reference path of the StyleGAN3 ops against their naive definitions, known answers and
finite differences, plus the dispatch between it and the CUDA kernels (all on CPU)."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from src.stylegan3.ops import (
    ACTIVATIONS,
    bias_act,
    dispatch,
    downsample2d,
    filter2d,
    filtered_lrelu,
    naive,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from src.stylegan3.ops.upfirdn2d import get_filter_size, parse_padding, parse_scaling

SQRT2 = math.sqrt(2)
# Asymmetric filters, so that a filter applied the wrong way round shows.
FILTERS = {
    "1d-odd": torch.tensor([1.0, 3.0, -2.0, 4.0, 1.5]),
    "1d-even": torch.tensor([0.5, 2.0, -1.0, 3.0]),
    "2d": torch.tensor([[1.0, -2.0, 0.5, 3.0], [2.0, 1.0, -1.0, 0.25], [0.5, 4.0, 2.0, -3.0]]),
}
ACTIVATION_NAMES = list(ACTIVATIONS)
# NVIDIA's activation table (torch_utils/ops/bias_act.py, activation_funcs: def_alpha, def_gain),
# written out independently of our ACTIVATIONS.
DEFAULT_ALPHA_GAIN = {
    "linear": (0.0, 1.0),
    "relu": (0.0, SQRT2),
    "lrelu": (0.2, SQRT2),
    "tanh": (0.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "elu": (0.0, 1.0),
    "selu": (0.0, 1.0),
    "softplus": (0.0, 1.0),
    "swish": (0.0, SQRT2),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The tensors here are tiny: one thread is as fast, and immune to the OpenMP barrier stalls
    that made gradcheck up to 30x slower while other processes shared the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def away_from_zero(*shape: int, seed: int = 0) -> torch.Tensor:
    """float64 values with 0.3 <= |v| <= 1.3: no activation kink within reach of gradcheck."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = 0.3 + torch.rand(shape, generator=generator, dtype=torch.float64)
    sign = torch.randint(0, 2, shape, generator=generator).double() * 2 - 1
    return magnitude * sign


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-10) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


# --------------------------------------------------------------------------- helpers


def test_parse_scaling_and_padding() -> None:
    assert parse_scaling(2) == (2, 2)
    assert parse_scaling((2, 4)) == (2, 4)
    assert parse_padding(3) == (3, 3, 3, 3)
    assert parse_padding((1, -2)) == (1, 1, -2, -2)
    assert parse_padding([1, 2, 3, -4]) == (1, 2, 3, -4)
    for bad in (0, (1, 0), (1, 2, 3), 1.5):
        with pytest.raises(ValueError, match="scaling"):
            parse_scaling(bad)
    for bad in ((1, 2, 3), 0.5):
        with pytest.raises(ValueError, match="padding"):
            parse_padding(bad)


def test_get_filter_size() -> None:
    assert get_filter_size(None) == (1, 1)
    assert get_filter_size(torch.ones(6)) == (6, 6)
    assert get_filter_size(torch.ones(3, 5)) == (5, 3)
    with pytest.raises(ValueError, match="1-D"):
        get_filter_size(torch.ones(2, 2, 2))


def test_setup_filter() -> None:
    small = setup_filter([1, 3, 3, 1])
    assert small.dtype == torch.float32 and small.shape == (4, 4)
    assert_close(
        small, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    )

    taps = torch.arange(1.0, 9.0)
    separable = setup_filter(taps)
    assert separable.shape == (8,)
    assert_close(separable, taps / taps.sum(), atol=1e-7)
    assert setup_filter(taps, separable=False).shape == (8, 8)
    assert_close(setup_filter(taps, flip_filter=True), separable.flip(0))
    # The total gain is `gain`: sqrt(gain) per axis for a separable filter.
    assert float(setup_filter(taps, gain=4).sum()) == pytest.approx(2.0)
    assert float(setup_filter([1, 2, 1], gain=4).sum()) == pytest.approx(4.0)
    assert_close(setup_filter([2.0, 6.0], normalize=False), torch.tensor([[4.0, 12], [12, 36]]))
    assert_close(setup_filter(None), torch.ones(1, 1))


# --------------------------------------------------------------------------- upfirdn2d


def run_both(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference path through the public API, and the naive definition."""
    actual = upfirdn2d(
        x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref"
    )
    naive_filter = torch.ones(1, 1) if f is None else f
    return actual, naive.upfirdn2d(x, naive_filter, up, down, padding, flip_filter, gain)


@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("down", [1, 2, 4])
@pytest.mark.parametrize("up", [1, 2, 4])
def test_upfirdn2d_matches_naive(up: int, down: int, filter_name: str, flip_filter: bool) -> None:
    x = randn(2, 3, 7, 10)
    padding = (3, -1, -2, 4)  # both signs, different per side
    actual, expected = run_both(
        x, FILTERS[filter_name], (up, up), (down, down), padding, flip_filter, 1.7
    )
    assert_close(actual, expected)


@pytest.mark.parametrize(
    ("up", "down", "padding", "expected_padding"),
    [
        ((2, 1), (1, 2), (1, 2), (1, 1, 2, 2)),
        ((1, 4), (2, 1), (0, 3, -1, 2), (0, 3, -1, 2)),
        ((4, 2), (2, 4), 5, (5, 5, 5, 5)),
        ((3, 2), (2, 3), (2, 1, 0, 3), (2, 1, 0, 3)),  # coprime up/down on both axes
        ((2, 2), (2, 2), (-3, 6, 4, -2), (-3, 6, 4, -2)),
    ],
)
@pytest.mark.parametrize("filter_name", ["1d-odd", "2d", None])
def test_upfirdn2d_per_axis_arguments(
    up: tuple[int, int],
    down: tuple[int, int],
    padding: int | tuple[int, ...],
    expected_padding: tuple[int, int, int, int],
    filter_name: str | None,
) -> None:
    x = randn(1, 2, 6, 9, seed=1)
    f = None if filter_name is None else FILTERS[filter_name]
    actual = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=0.8, impl="ref")
    naive_filter = torch.ones(1, 1) if f is None else f
    assert_close(actual, naive.upfirdn2d(x, naive_filter, up, down, expected_padding, False, 0.8))


def test_upfirdn2d_random_configurations_match_naive() -> None:
    rng = random.Random(0)
    checked = 0
    while checked < 150:
        up = (rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3, 4]))
        down = (rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3, 4]))
        width, height = rng.randint(1, 7), rng.randint(1, 7)
        f = randn(rng.randint(1, 9), seed=checked, dtype=torch.float32)
        if rng.random() < 0.5:
            f = randn(rng.randint(1, 6), rng.randint(1, 6), seed=checked, dtype=torch.float32)
        padding = tuple(rng.randint(-5, 8) for _ in range(4))
        filter_w, filter_h = get_filter_size(f)
        padded_w = width * up[0] + padding[0] + padding[1]
        padded_h = height * up[1] + padding[2] + padding[3]
        # The naive definition crops before it pads, so it needs some image left after cropping.
        if padded_w < filter_w or padded_h < filter_h:
            continue
        if width * up[0] + min(padding[0], 0) + min(padding[1], 0) <= 0:
            continue
        if height * up[1] + min(padding[2], 0) + min(padding[3], 0) <= 0:
            continue
        x = randn(2, 3, height, width, seed=checked)
        flip_filter = rng.random() < 0.5
        actual, expected = run_both(x, f, up, down, padding, flip_filter, rng.uniform(-2, 3))
        assert_close(actual, expected)
        checked += 1


@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_impulse_response_is_the_filter(filter_name: str) -> None:
    f = FILTERS[filter_name]
    kernel = torch.outer(f, f) if f.ndim == 1 else f
    width, height = get_filter_size(f)
    impulse = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    full = (width - 1, width - 1, height - 1, height - 1)
    response = upfirdn2d(impulse, f, padding=full)[0, 0]
    assert_close(response, kernel.double())  # true convolution: the filter as it is
    flipped = upfirdn2d(impulse, f, padding=full, flip_filter=True)[0, 0]
    assert_close(flipped, kernel.double().flip([0, 1]))  # correlation: the filter reversed
    # Upsampling an impulse by 2 gives the filter too (the zeros in between contribute nothing).
    upsampled = upfirdn2d(impulse, f, up=2, padding=full)[0, 0]
    assert_close(upsampled[:height, :width], kernel.double())


@pytest.mark.parametrize(
    "f",
    [setup_filter([1, 3, 3, 1]), setup_filter(torch.hann_window(14, periodic=False)[1:-1])],
    ids=["4-tap 2-D", "12-tap separable"],
)
def test_constant_image_stays_constant(f: torch.Tensor) -> None:
    """Away from the borders, up to float32 rounding of the filter taps."""
    constant = torch.full((1, 2, 32, 40), 0.75, dtype=torch.float64)
    taps = get_filter_size(f)[0]

    def interior(y: torch.Tensor, margin: int) -> torch.Tensor:
        return y[:, :, margin:-margin, margin:-margin]

    up = upsample2d(constant, f)
    assert up.shape == (1, 2, 64, 80)
    assert_close(interior(up, taps), torch.full_like(interior(up, taps), 0.75), atol=1e-6)
    down = downsample2d(constant, f)
    assert down.shape == (1, 2, 16, 20)
    margin = taps // 2 + 1
    assert_close(interior(down, margin), torch.full_like(interior(down, margin), 0.75), atol=1e-6)
    same = filter2d(constant, f)
    assert same.shape == constant.shape
    assert_close(interior(same, taps), interior(constant, taps), atol=1e-6)
    assert not torch.allclose(same[:, :, 0, 0], constant[:, :, 0, 0])  # borders see the padding


def test_helpers_match_their_upfirdn2d_definitions() -> None:
    x = randn(1, 3, 8, 6, seed=2)
    f = FILTERS["1d-even"]
    assert_close(
        upsample2d(x, f, up=(2, 4)), naive.upfirdn2d(x, f, (2, 4), (1, 1), (2, 1, 3, 0), False, 8.0)
    )
    assert_close(
        downsample2d(x, f, down=2, padding=1),
        naive.upfirdn2d(x, f, (1, 1), (2, 2), (2, 2, 2, 2), False, 1.0),
    )
    assert_close(
        filter2d(x, f, gain=3), naive.upfirdn2d(x, f, (1, 1), (1, 1), (2, 1, 2, 1), False, 3.0)
    )
    assert_close(filter2d(x, None), x)


def test_separable_gain_is_the_total_gain() -> None:
    x = randn(1, 2, 5, 6, seed=3)
    f = FILTERS["1d-odd"]
    assert_close(
        upfirdn2d(x, f, padding=2, gain=-2.5), upfirdn2d(x, torch.outer(f, f), padding=2, gain=-2.5)
    )


def test_upfirdn2d_skips_zeros_and_dropped_samples() -> None:
    """Multiply-adds grow with the output, not with the zero-stuffed or undecimated image."""
    x = torch.randn(1, 4, 16, 16)
    f = setup_filter(torch.hann_window(14, periodic=False)[1:-1])  # 12 taps, separable
    taps = 12
    with FlopCounterMode(display=False) as counter:
        upsample2d(x, f)
    # x pass: 16x16 inputs x 12 taps (= 16x32 outputs x 6 taps); y pass: 16x32 inputs x 12.
    assert counter.get_total_flops() == 2 * 4 * (16 * 16 + 16 * 32) * taps
    with FlopCounterMode(display=False) as counter:
        downsample2d(x, f)
    assert counter.get_total_flops() == 2 * 4 * (16 * 8 + 8 * 8) * taps
    with FlopCounterMode(display=False) as counter:
        upfirdn2d(x, f, up=2, down=2, padding=5)
    assert counter.get_total_flops() == 2 * 4 * (16 * 16 + 16 * 16) * taps // 2


@pytest.mark.parametrize(
    ("up", "down", "padding", "filter_name", "flip_filter"),
    [
        (2, 1, (2, 1, 1, 2), "1d-even", False),
        (1, 2, (1, 1, 0, 2), "2d", True),
        ((2, 1), (1, 2), (1, 0, -1, 2), "1d-odd", True),
        (4, 2, 3, "1d-even", False),
    ],
)
def test_upfirdn2d_gradients(
    up: int | tuple[int, int],
    down: int | tuple[int, int],
    padding: int | tuple[int, ...],
    filter_name: str,
    flip_filter: bool,
) -> None:
    x = randn(1, 2, 5, 6, seed=4).requires_grad_()

    def op(x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, FILTERS[filter_name], up, down, padding, flip_filter, gain=1.3)

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))


def test_upfirdn2d_rejects_bad_arguments() -> None:
    x = randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="NCHW"):
        upfirdn2d(x[0], None)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        upfirdn2d(x, torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="output would be"):
        upfirdn2d(x, torch.ones(3), padding=-2)


# --------------------------------------------------------------------------- bias_act


def test_activation_defaults() -> None:
    for name, (alpha, gain) in DEFAULT_ALPHA_GAIN.items():
        assert ACTIVATIONS[name].default_alpha == alpha
        assert ACTIVATIONS[name].default_gain == pytest.approx(gain)
    assert set(ACTIVATIONS) == set(DEFAULT_ALPHA_GAIN)


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_only_lrelu_reads_alpha(act: str) -> None:
    """NVIDIA's table passes alpha to every function, and only leaky ReLU uses it."""
    x = randn(3, 4, seed=12) * 3
    changed = not torch.equal(bias_act(x, act=act, alpha=0.7), bias_act(x, act=act))
    assert changed == (act == "lrelu")


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_activation_with_defaults_matches_closed_form(act: str) -> None:
    x, b = randn(4, 5, 3, 2, seed=5) * 3, randn(5, seed=6)
    alpha, gain = DEFAULT_ALPHA_GAIN[act]
    assert_close(bias_act(x, b, act=act), naive.bias_act(x, b, 1, act, alpha, gain, None))


def test_activation_known_values() -> None:
    e = math.e
    cases = [
        ("linear", 3.0, 3.0),
        ("relu", -1.0, 0.0),
        ("relu", 2.0, 2 * SQRT2),
        ("lrelu", -1.0, -0.2 * SQRT2),
        ("tanh", 1.0, math.tanh(1.0)),
        ("sigmoid", 0.0, 0.5),
        ("elu", -1.0, 1 / e - 1),
        ("selu", 1.0, 1.0507009873554805),
        ("selu", -1.0, 1.0507009873554805 * 1.6732632423543772 * (1 / e - 1)),
        ("softplus", 0.0, math.log(2.0)),
        ("swish", 1.0, SQRT2 / (1 + 1 / e)),
    ]
    for act, value, expected in cases:
        result = bias_act(torch.tensor([value], dtype=torch.float64), act=act)
        assert float(result) == pytest.approx(expected, rel=1e-12), act


def test_bias_act_explicit_alpha_gain_and_dim() -> None:
    x = randn(3, 4, 5, seed=7)
    b = randn(5, seed=8)
    for act, alpha in (("lrelu", 0.1), ("elu", 0.5)):
        expected = naive.bias_act(x, b, 2, act, alpha, 3.0, None)
        if act == "elu":  # as in NVIDIA's table, elu ignores alpha
            assert_close(expected, naive.bias_act(x, b, 2, act, 1.0, 3.0, None))
        assert_close(bias_act(x, b, dim=2, act=act, alpha=alpha, gain=3.0), expected)
        assert_close(bias_act(x, b, dim=-1, act=act, alpha=alpha, gain=3.0), expected)
    fc = randn(8, 16, seed=9)
    bias = randn(16, seed=10)
    assert_close(
        bias_act(fc, bias, act="lrelu"), naive.bias_act(fc, bias, 1, "lrelu", 0.2, SQRT2, None)
    )


def test_bias_act_clamp() -> None:
    x = randn(2, 3, 4, 4, seed=11) * 10
    clamped = bias_act(x, act="lrelu", clamp=5)
    assert float(clamped.abs().max()) == 5.0
    assert_close(clamped, naive.bias_act(x, None, 1, "lrelu", 0.2, SQRT2, 5.0))
    assert_close(bias_act(x, clamp=-1), x)  # negative: no clamping
    assert_close(bias_act(x, clamp=0), torch.zeros_like(x))


def test_bias_act_rejects_bad_arguments() -> None:
    x = randn(2, 3, 4)
    with pytest.raises(ValueError, match="lrelu"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="bias"):
        bias_act(x, torch.zeros(4))
    with pytest.raises(ValueError, match="dim"):
        bias_act(x, torch.zeros(4), dim=3)


@pytest.mark.parametrize("clamp", [None, 0.5])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_bias_act_gradients(act: str, with_bias: bool, clamp: float | None) -> None:
    x = away_from_zero(2, 3, 4, seed=12).requires_grad_()
    # Biases of at most 0.1 keep x + b at least 0.2 away from the kinks of relu and lrelu.
    b = torch.linspace(-0.1, 0.1, 3, dtype=torch.float64) if with_bias else None
    inputs = (x,) if b is None else (x, b.requires_grad_())
    if clamp is not None:
        magnitudes = bias_act(x, b, act=act).detach().abs()
        assert (magnitudes - clamp).abs().min() > 1e-3  # no value sits on the clamp's kink
        assert (magnitudes > clamp).any()  # and the clamp bites

    def op(x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return bias_act(x, b, act=act, clamp=clamp)

    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)


# --------------------------------------------------------------------------- filtered_lrelu

FILTERED_LRELU_CASES = [
    # up, down, fu, fd, padding, gain, slope, clamp, flip_filter
    (2, 2, "1d-even", "1d-odd", (3, 2, 4, 1), SQRT2, 0.2, None, False),
    (1, 1, "1d-odd", "2d", 4, 1.0, 0.1, 0.8, True),
    (4, 2, "2d", "1d-even", (5, 4, 2, 7), SQRT2, 0.2, 1.5, False),
    (2, 4, "1d-odd", "2d", (6, -1, 2, 3), 2.0, 0.3, None, True),
    (1, 2, None, "1d-even", (2, 1), SQRT2, 0.2, 1.0, False),
    (4, 4, "1d-even", None, (1, 2, 0, 3), -1.5, 0.2, 0.7, False),  # negative gain
    (2, 1, "2d", "2d", (2, 3, 1, 4), SQRT2, -0.3, None, True),  # negative slope
]


def _filter(name: str | None) -> torch.Tensor:
    return torch.ones(1) if name is None else FILTERS[name]


@pytest.mark.parametrize(
    ("up", "down", "fu", "fd", "padding", "gain", "slope", "clamp", "flip_filter"),
    FILTERED_LRELU_CASES,
)
def test_filtered_lrelu_matches_naive(
    up: int,
    down: int,
    fu: str | None,
    fd: str | None,
    padding: int | tuple[int, ...],
    gain: float,
    slope: float,
    clamp: float | None,
    flip_filter: bool,
) -> None:
    x, b = randn(2, 3, 7, 9, seed=13), randn(3, seed=14)
    actual = filtered_lrelu(
        x,
        None if fu is None else FILTERS[fu],
        None if fd is None else FILTERS[fd],
        b,
        up,
        down,
        padding,
        gain,
        slope,
        clamp,
        flip_filter,
    )
    expected = naive.filtered_lrelu(
        x,
        _filter(fu),
        _filter(fd),
        b,
        up,
        down,
        parse_padding(padding),
        gain,
        slope,
        clamp,
        flip_filter,
    )
    assert_close(actual, expected)


def test_filtered_lrelu_is_the_composition_of_the_public_ops() -> None:
    x, b = randn(2, 4, 8, 8, seed=15), randn(4, seed=16)
    fu, fd = setup_filter(torch.hann_window(14, periodic=False)[1:-1]), setup_filter([1, 3, 3, 1])
    padding = (7, 6, 5, 8)
    up = upfirdn2d(bias_act(x, b), fu, up=2, padding=padding, gain=4)
    activated = bias_act(up, act="lrelu", alpha=0.25, gain=1.7, clamp=0.9)
    expected = upfirdn2d(activated, fd, down=2)
    actual = filtered_lrelu(
        x, fu, fd, b, up=2, down=2, padding=padding, gain=1.7, slope=0.25, clamp=0.9
    )
    assert_close(actual, expected)


def test_filtered_lrelu_output_size_and_no_side_effects() -> None:
    # The T-config geometry of a rate-doubling layer: 52 -> 84 with up 4, down 2, 24/12 taps.
    x = randn(1, 2, 52, 52, seed=17)
    original = x.clone()
    fu, fd = setup_filter(torch.ones(24)), setup_filter(torch.ones(12))
    pad_total = (84 - 1) * 2 + 1 - 52 * 4 + 24 + 12 - 2
    pad_lo = (pad_total + 4) // 2
    y = filtered_lrelu(x, fu, fd, up=4, down=2, padding=(pad_lo, pad_total - pad_lo) * 2)
    assert y.shape == (1, 2, 84, 84)
    assert torch.equal(x, original)
    identity = filtered_lrelu(x, slope=0.5, gain=1.0)  # identity filters: a plain leaky ReLU
    assert_close(identity, torch.where(x > 0, x, 0.5 * x))
    assert torch.equal(x, original)


def test_filtered_lrelu_same_with_and_without_autograd() -> None:
    x, b = randn(2, 3, 6, 6, seed=18), randn(3, seed=19)
    fu, fd = FILTERS["1d-even"], FILTERS["2d"]
    args = (fu, fd, b, 2, 2, (4, 3, 5, 2), SQRT2, 0.2, 0.6)
    with torch.no_grad():
        in_place = filtered_lrelu(x, *args)
    assert_close(filtered_lrelu(x.requires_grad_(), *args), in_place)


@pytest.mark.parametrize(
    ("up", "down", "gain", "slope"), [(2, 2, SQRT2, 0.2), (4, 1, -1.0, 0.2), (1, 2, SQRT2, -0.2)]
)
def test_filtered_lrelu_gradients(up: int, down: int, gain: float, slope: float) -> None:
    x, b = randn(1, 2, 5, 5, seed=20).requires_grad_(), randn(2, seed=21).requires_grad_()

    def op(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return filtered_lrelu(
            x, FILTERS["1d-even"], FILTERS["2d"], b, up, down, (3, 2, 4, 1), gain, slope, 1.2
        )

    assert torch.autograd.gradcheck(op, (x, b))


def test_filtered_lrelu_rejects_bad_arguments() -> None:
    x = randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="up and down"):
        filtered_lrelu(x, up=0)
    with pytest.raises(ValueError, match="output would be"):
        filtered_lrelu(x, torch.ones(12), up=2)
    with pytest.raises(ValueError, match="bias"):
        filtered_lrelu(x, b=torch.zeros(3))


# --------------------------------------------------------------------------- layouts and dtypes


def test_channels_last_gives_the_same_values_and_keeps_its_layout() -> None:
    x = randn(2, 5, 9, 11, seed=22)
    f = FILTERS["1d-odd"]
    for op in (
        lambda t: upsample2d(t, f),
        lambda t: downsample2d(t, FILTERS["2d"]),
        lambda t: filter2d(t, f),
        lambda t: filtered_lrelu(t, f, FILTERS["2d"], None, 2, 2, 4, clamp=1.0),
        lambda t: bias_act(t, randn(5), act="swish"),
    ):
        plain_x = x.clone().requires_grad_()
        last_x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        plain, last = op(plain_x), op(last_x)
        assert_close(last, plain)
        assert plain.is_contiguous()
        assert last.is_contiguous(memory_format=torch.channels_last)
        upstream = randn(*plain.shape, seed=23)
        (plain * upstream).sum().backward()
        (last * upstream).sum().backward()
        assert_close(last_x.grad, plain_x.grad)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_low_precision_inputs(dtype: torch.dtype, tolerance: float) -> None:
    """fp16/bf16 run in their own dtype; errors stay within a few units of their precision,
    relative to the largest output value."""
    x, b = randn(2, 4, 12, 12, seed=23, dtype=torch.float32), randn(4, dtype=torch.float32)
    fu = setup_filter(torch.hann_window(14, periodic=False)[1:-1])
    fd = setup_filter([1, 3, 3, 1])
    ops = (
        lambda t: upsample2d(t, fu),
        lambda t: downsample2d(t, fd),
        lambda t: filtered_lrelu(t, fu, fd, b, 2, 2, 7, clamp=2.0),
        lambda t: bias_act(t, b, act="lrelu"),
    )
    for op in ops:
        expected = op(x)
        actual = op(x.to(dtype))
        assert actual.dtype == dtype
        error = (actual.float() - expected).abs().max() / expected.abs().max()
        assert error < tolerance


# --------------------------------------------------------------------------- dispatch


class FakeKernels:
    """Records the normalised arguments each op hands to the kernels."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return args[0]

        return record


FAKE_CUDA_TENSOR = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def test_dispatch_rejects_unknown_impl(no_env: None) -> None:
    with pytest.raises(ValueError, match="auto, ref, cuda"):
        upfirdn2d(randn(1, 1, 2, 2), None, impl="triton")


def test_dispatch_cuda_on_cpu_tensor_explains_the_fix(no_env: None) -> None:
    with pytest.raises(ValueError, match=r"CUDA tensor.*x\.cuda\(\).*impl='auto'"):
        bias_act(randn(2, 3), impl="cuda")


def test_dispatch_env_forces_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[torch.device] = []

    def load(device: torch.device) -> tuple[FakeKernels, str]:
        loads.append(device)
        return FakeKernels(), ""

    monkeypatch.setattr(dispatch, "_load_kernels", load)
    monkeypatch.setenv(dispatch.ENV_VAR, "ref")
    assert dispatch.choose("cuda", FAKE_CUDA_TENSOR) is None
    assert dispatch.choose("auto", FAKE_CUDA_TENSOR) is None
    x = randn(1, 2, 5, 5)
    assert_close(upfirdn2d(x, FILTERS["2d"], impl="cuda"), upfirdn2d(x, FILTERS["2d"], impl="ref"))
    assert loads == []
    monkeypatch.setenv(dispatch.ENV_VAR, "reff")
    with pytest.raises(ValueError, match="TOONFORGE_OPS_IMPL"):
        dispatch.choose("auto", x)


def test_dispatch_uses_kernels_for_cuda_tensors(
    monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    kernels = FakeKernels()
    monkeypatch.setattr(dispatch, "_load_kernels", lambda device: (kernels, ""))
    assert dispatch.choose("auto", FAKE_CUDA_TENSOR) is kernels
    assert dispatch.choose("cuda", FAKE_CUDA_TENSOR) is kernels
    assert dispatch.choose("ref", FAKE_CUDA_TENSOR) is None
    monkeypatch.setattr(dispatch, "_load_kernels", lambda device: (None, "nvcc not found"))
    assert dispatch.choose("auto", FAKE_CUDA_TENSOR) is None  # falls back quietly
    with pytest.raises(RuntimeError, match="nvcc not found"):
        dispatch.choose("cuda", FAKE_CUDA_TENSOR)


def test_dispatch_treats_a_missing_cuda_module_as_no_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "src.stylegan3.ops.cuda", None)  # makes the import fail
    kernels, why_not = dispatch._load_kernels(torch.device("cuda", 0))
    assert kernels is None
    assert "cannot be imported" in why_not


def test_ops_hand_normalised_arguments_to_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = FakeKernels()
    monkeypatch.setattr(dispatch, "choose", lambda impl, x: kernels)
    x = randn(1, 3, 6, 6)
    bias = torch.zeros(6)
    upfirdn2d(x, None, up=2, down=(1, 2), padding=(1, 2), flip_filter=1, gain=2)
    bias_act(x, bias, dim=-1, act="lrelu", clamp=-1)
    filtered_lrelu(x, None, torch.ones(4, dtype=torch.float64), None, up=2, padding=3)
    assert [name for name, _, _ in kernels.calls] == ["upfirdn2d", "bias_act", "filtered_lrelu"]
    (_, up_args, up_kwargs), (_, act_args, act_kwargs), (_, fl_args, fl_kwargs) = kernels.calls

    f = up_args[1]
    assert f.dtype == torch.float32 and f.shape == (1, 1)
    assert up_kwargs == {
        "up": (2, 2),
        "down": (1, 2),
        "padding": (1, 1, 2, 2),
        "flip_filter": True,
        "gain": 2.0,
    }
    assert type(up_kwargs["gain"]) is float

    assert act_args[1] is bias
    assert act_kwargs == {
        "dim": 3,
        "act": "lrelu",
        "alpha": 0.2,
        "gain": pytest.approx(SQRT2),
        "clamp": None,
    }

    fu, fd, b = fl_args[1:4]
    assert fu.shape == (1,) and fu.dtype == torch.float32
    assert fd.dtype == torch.float32 and b is None
    assert fl_kwargs == {
        "up": 2,
        "down": 1,
        "padding": (3, 3, 3, 3),
        "gain": pytest.approx(SQRT2),
        "slope": 0.2,
        "clamp": None,
        "flip_filter": False,
    }


# --------------------------------------------------------------------------- heavier sweeps


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "out_size", "up", "down", "up_taps", "down_taps"),
    [
        ("L2_36", 36, 36, 2, 2, 12, 12),
        ("L6_84", 52, 84, 4, 2, 24, 12),
        ("L9_148", 148, 148, 2, 2, 12, 12),
    ],
)
def test_stylegan3_t_layer_geometries_match_naive(
    name: str, size: int, out_size: int, up: int, down: int, up_taps: int, down_taps: int
) -> None:
    fu = setup_filter(torch.kaiser_window(up_taps, periodic=False, beta=4.0))
    fd = setup_filter(torch.kaiser_window(down_taps, periodic=False, beta=4.0))
    pad_total = (out_size - 1) * down + 1 - size * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2
    padding = (pad_lo, pad_total - pad_lo, pad_lo, pad_total - pad_lo)
    x, b = randn(1, 3, size, size, seed=24), randn(3, seed=25)
    actual = filtered_lrelu(x, fu, fd, b, up, down, padding, clamp=256)
    assert actual.shape == (1, 3, out_size, out_size), name
    expected = naive.filtered_lrelu(x, fu, fd, b, up, down, padding, SQRT2, 0.2, 256.0, False)
    assert_close(actual, expected)


@pytest.mark.slow
def test_upfirdn2d_exhaustive_small_sweep() -> None:
    x = randn(1, 2, 5, 6, seed=26)
    for up_x, up_y, down_x, down_y in (
        (ux, uy, dx, dy)
        for ux in (1, 2, 4)
        for uy in (1, 2, 4)
        for dx in (1, 2, 4)
        for dy in (1, 2, 4)
    ):
        for f in (FILTERS["1d-odd"], FILTERS["1d-even"], FILTERS["2d"], torch.ones(1)):
            for padding in ((0, 0, 0, 0), (3, 3, 3, 3), (-1, 4, 2, -1)):
                for flip_filter in (False, True):
                    actual, expected = run_both(
                        x, f, (up_x, up_y), (down_x, down_y), padding, flip_filter, 1.0
                    )
                    assert_close(actual, expected)
