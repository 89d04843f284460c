"""Time per call of the StyleGAN3 ops at the layer shapes of the 256-px config T, batch 4.

CPU: the reference path against the naive definition (``src.stylegan3.ops.naive``: zero
insertion and one full 2-D convolution). With a GPU also the reference path and the CUDA
kernels there (``impl='cuda'``, timed with ``torch.cuda.synchronize``). Everything runs forward
under ``torch.no_grad()``, as at inference.

The shapes approximate three T-256 synthesis layers (named ``L{index}_{out size}_{channels}``)
plus ToRGB. A layer's size is its sampling rate plus a 10-sample margin each side, so the rate
doubles where the size grows (36 -> 52 -> 84 -> 148 -> 276 for rates 16 ... 256). filtered_lrelu
runs at ``tmp = max(in_rate, out_rate) * 2``, so ``up = tmp / in_rate`` and ``down = tmp /
out_rate`` (2 and 2, or 4 and 2 where the rate doubles), with filters of 6 taps per unit of
up/down (12 or 24). The padding makes the output the layer's size: ``(out - 1) * down + 1 -
in * up + up_taps + down_taps - 2`` in all, split as in the public code. Approximations: the
input is taken at the layer's input size, where the real layer feeds its 3x3 convolution's full
output (2 samples larger) and pads 2 * up less; the taps are Kaiser windows, not the real
cutoffs (the values do not change the timings); filtered_lrelu sees the layer's output channels
(its convolution runs first).

- L2_36_512: 512 x 36 x 36 -> 36, up 2, down 2, 12/12 taps
- L6_84_512: 512 x 52 x 52 -> 84, up 4, down 2, 24/12 taps (the rate doubles)
- L9_148_363: 363 x 148 x 148 -> 148, up 2, down 2, 12/12 taps
- L14_256_3 (ToRGB): bias_act, linear with a bias and clamp 256, on 3 x 256 x 256

Each layer also times the stages that the reference filtered_lrelu is made of: the upsampling
upfirdn2d, the leaky ReLU (bias_act) on the up**2 times larger intermediate, and the
downsampling upfirdn2d. The naive filtered_lrelu is their naive chain (plus the bias add), timed
once. Run: ``.venv/bin/python benchmarks/ops.py [--naive-repeats 1] [--skip-naive]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from src.stylegan3.ops import bias_act, filtered_lrelu, naive, setup_filter, upfirdn2d

BATCH = 4
CLAMP = 256.0
SLOPE = 0.2
GAIN = math.sqrt(2)


@dataclass(frozen=True)
class Layer:
    name: str
    channels: int
    in_size: int
    out_size: int
    up: int
    down: int

    @property
    def up_taps(self) -> int:
        return 6 * self.up

    @property
    def down_taps(self) -> int:
        return 6 * self.down

    @property
    def padding(self) -> tuple[int, int, int, int]:
        total = (self.out_size - 1) * self.down + 1 - self.in_size * self.up
        total += self.up_taps + self.down_taps - 2
        low = (total + self.up) // 2
        return (low, total - low, low, total - low)


LAYERS = (
    Layer("L2_36_512", 512, 36, 36, 2, 2),
    Layer("L6_84_512", 512, 52, 84, 4, 2),
    Layer("L9_148_363", 363, 148, 148, 2, 2),
)


@dataclass
class Op:
    """One op at one shape, run by ``run(impl)``."""

    layer: str
    name: str
    shape: str
    run: Callable[[str], torch.Tensor]


def lowpass(taps: int, device: torch.device) -> torch.Tensor:
    return setup_filter(torch.kaiser_window(taps, periodic=False, beta=6.0), device=device)


@dataclass
class LayerInputs:
    x: torch.Tensor
    b: torch.Tensor
    fu: torch.Tensor
    fd: torch.Tensor


def layer_inputs(layer: Layer, device: torch.device) -> LayerInputs:
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (BATCH, layer.channels, layer.in_size, layer.in_size)
    return LayerInputs(
        x=torch.randn(shape, generator=generator, device=device),
        b=torch.randn(layer.channels, generator=generator, device=device),
        fu=lowpass(layer.up_taps, device),
        fd=lowpass(layer.down_taps, device),
    )


def describe(t: torch.Tensor, out_size: int) -> str:
    return f"{t.shape[1]}x{t.shape[2]}² -> {out_size}²"


def layer_ops(layer: Layer, device: torch.device) -> list[Op]:
    """filtered_lrelu, then the stages of its reference path, each fed the previous result."""
    inputs = layer_inputs(layer, device)
    x, b, fu, fd = inputs.x, inputs.b, inputs.fu, inputs.fd
    with torch.no_grad():
        biased = x + b.reshape(1, -1, 1, 1)
        tmp = upfirdn2d(biased, fu, up=layer.up, padding=layer.padding, gain=layer.up**2)
        activated = bias_act(tmp, act="lrelu", clamp=CLAMP)
    return [
        Op(
            layer.name,
            f"filtered_lrelu up {layer.up} down {layer.down}",
            describe(x, layer.out_size),
            lambda impl: filtered_lrelu(
                x, fu, fd, b, layer.up, layer.down, layer.padding, clamp=CLAMP, impl=impl
            ),
        ),
        Op(
            layer.name,
            f"  stage 1: upfirdn2d up {layer.up}, {layer.up_taps} taps",
            describe(x, tmp.shape[2]),
            lambda impl: upfirdn2d(
                biased, fu, up=layer.up, padding=layer.padding, gain=layer.up**2, impl=impl
            ),
        ),
        Op(
            layer.name,
            "  stage 2: bias_act lrelu, clamp",
            describe(tmp, tmp.shape[2]),
            lambda impl: bias_act(tmp, act="lrelu", clamp=CLAMP, impl=impl),
        ),
        Op(
            layer.name,
            f"  stage 3: upfirdn2d down {layer.down}, {layer.down_taps} taps",
            describe(tmp, layer.out_size),
            lambda impl: upfirdn2d(activated, fd, down=layer.down, impl=impl),
        ),
    ]


def layer_naive(layer: Layer, repeats: int) -> list[tuple[float, torch.Tensor]]:
    """(seconds per call, result) of the naive definition for each of ``layer_ops``' rows.

    The naive filtered_lrelu is the bias add followed by the three naive stages, so it is timed
    as that chain, which also feeds each stage the naive result of the one before.
    """
    inputs = layer_inputs(layer, torch.device("cpu"))
    up, down, padding = (layer.up, layer.up), (layer.down, layer.down), layer.padding
    bias_seconds, biased = time_naive(lambda: inputs.x + inputs.b.reshape(1, -1, 1, 1), repeats)
    up_seconds, tmp = time_naive(
        lambda: naive.upfirdn2d(biased, inputs.fu, up, (1, 1), padding, False, layer.up**2),
        repeats,
    )
    act_seconds, activated = time_naive(
        lambda: naive.bias_act(tmp, None, 1, "lrelu", SLOPE, GAIN, CLAMP), repeats
    )
    down_seconds, result = time_naive(
        lambda: naive.upfirdn2d(activated, inputs.fd, (1, 1), down, (0, 0, 0, 0), False, 1.0),
        repeats,
    )
    total = bias_seconds + up_seconds + act_seconds + down_seconds
    return [(total, result), (up_seconds, tmp), (act_seconds, activated), (down_seconds, result)]


def torgb_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(BATCH, 3, 256, 256, generator=generator, device=device)
    return x, torch.randn(3, generator=generator, device=device)


def torgb_op(device: torch.device) -> Op:
    x, b = torgb_inputs(device)
    return Op(
        "L14_256_3",
        "bias_act linear, bias, clamp",
        describe(x, 256),
        lambda impl: bias_act(x, b, clamp=CLAMP, impl=impl),
    )


def torgb_naive(repeats: int) -> tuple[float, torch.Tensor]:
    x, b = torgb_inputs(torch.device("cpu"))
    return time_naive(lambda: naive.bias_act(x, b, 1, "linear", 0.0, 1.0, CLAMP), repeats)


def seconds_per_call(
    run: Callable[[], torch.Tensor], device: torch.device, min_seconds: float
) -> tuple[float, torch.Tensor]:
    """Mean wall time of ``run`` after one warm-up call, over at least ``min_seconds`` and one
    call, and its result."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        run()
        sync()
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < min_seconds:
            result = run()
            sync()
            calls += 1
        return (time.perf_counter() - start) / calls, result


def time_naive(run: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Mean time of ``repeats`` naive calls (no warm-up: they are slow enough) and the result."""
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            result = run()
        return (time.perf_counter() - start) / repeats, result


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).abs().max() / expected.abs().max())


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def cuda_columns(op: Op, min_seconds: float) -> list[str]:
    """Reference and kernel milliseconds per call on the GPU (the kernels may be unavailable)."""
    gpu = torch.device("cuda")
    ref, _ = seconds_per_call(lambda: op.run("ref"), gpu, min_seconds)
    try:
        kernels, _ = seconds_per_call(lambda: op.run("cuda"), gpu, min_seconds)
    except RuntimeError as error:
        return [milliseconds(ref), f"n/a: {error}"]
    return [milliseconds(ref), milliseconds(kernels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-repeats", type=int, default=1, help="naive calls per op")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="timing per reference op")
    parser.add_argument("--skip-naive", action="store_true", help="time the reference path only")
    args = parser.parse_args()

    console = Console()
    console.width = max(console.width, 120)
    has_gpu = torch.cuda.is_available()
    table = Table(
        title=f"StyleGAN3-T 256 px ops, batch {BATCH}, float32, forward, no_grad "
        f"(CPU: {torch.get_num_threads()} threads)"
    )
    table.add_column("layer")
    table.add_column("op", no_wrap=True)
    table.add_column("C x in -> out", no_wrap=True)
    for column in ("ref CPU ms", "naive CPU ms", "speed-up", "rel. diff"):
        table.add_column(column, justify="right")
    if has_gpu:
        table.add_column("ref CUDA ms", justify="right")
        table.add_column("cuda ms", justify="right")

    cpu = torch.device("cpu")
    with console.status("timing...") as status:
        for layer in (*LAYERS, None):
            ops = [torgb_op(cpu)] if layer is None else layer_ops(layer, cpu)
            gpu_ops: list[Op | None] = [None] * len(ops)
            if has_gpu:
                gpu = torch.device("cuda")
                gpu_ops = [torgb_op(gpu)] if layer is None else layer_ops(layer, gpu)
            naive_results: list[tuple[float, torch.Tensor] | None] = [None] * len(ops)
            if not args.skip_naive:
                status.update(f"timing the naive path of {ops[0].layer}")
                naive_results = (
                    [torgb_naive(args.naive_repeats)]
                    if layer is None
                    else layer_naive(layer, args.naive_repeats)
                )
            for op, gpu_op, naive_result in zip(ops, gpu_ops, naive_results, strict=True):
                status.update(f"timing {op.layer} {op.name.strip()}")
                ref, result = seconds_per_call(lambda op=op: op.run("ref"), cpu, args.min_seconds)
                row = [op.layer, op.name, op.shape, milliseconds(ref)]
                if naive_result is None:
                    row += ["-", "-", "-"]
                else:
                    naive_seconds, expected = naive_result
                    error = relative_error(result, expected)
                    row += [
                        milliseconds(naive_seconds),
                        f"{naive_seconds / ref:.1f}x",
                        f"{error:.0e}",
                    ]
                if gpu_op is not None:
                    row += cuda_columns(gpu_op, args.min_seconds)
                table.add_row(*row)
    console.print(table)
    console.print(
        "speed-up: naive / reference time. rel. diff: max |reference - naive| / max |naive|.\n"
        "Stages: the public ops that make up the reference filtered_lrelu, on plain NCHW tensors; "
        "filtered_lrelu itself runs them channels-last on CPU, hence faster than their sum. The "
        "naive filtered_lrelu is the bias add plus the naive stages."
    )


if __name__ == "__main__":
    main()
