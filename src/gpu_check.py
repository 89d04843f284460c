"""``python -m src.gpu_check``: one unattended command that proves the CUDA path and measures it.

Parts, each timed and isolated (a failing part is reported and the rest still run):

1. ``build``: build (or find) the CUDA ops and print the build time.
2. ``pytest_cuda``: ``pytest -m cuda`` (the tests that need a GPU).
3. ``ops``: each op forward and forward+backward, float32 and float16, at StyleGAN3-T 256 layer
   shapes, our kernels against our reference path (time and largest relative difference).
4. ``sg3_generator``: StyleGAN3-T and -R generator forward, images/s at 256 (fp16 layers on).
5. ``sg3_train``: the G+D training step at 256, T and R, batch 32 in ``batch_gpu`` passes as
   NVIDIA's 1-GPU settings (16 for T, 8 for R), as s/kimg next to NVIDIA's published 1-GPU
   figures for StyleGAN3 at 256 (docs/configs.md of NVlabs/stylegan3).
6. ``pix2pix``, ``cyclegan``, ``photo2cartoon``: training iterations/s at 256, batch 1.

Every part records its peak GPU memory. One table is printed and ``gpu_check.json`` written
(``--out``). ``--cpu-dry-run`` runs the same parts on the CPU at tiny sizes, skipping the CUDA
build and tests, so that the table and the JSON are exercised where no GPU is (CI).
``--budget-s`` bounds the whole run: a part that would start past it is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from src.common.errors import UserError
from src.common.fileio import atomic_write_text

# NVIDIA's published training speed of StyleGAN3 at 256x256 on 1 GPU, batch 32 (s/kimg and
# peak GB; NVlabs/stylegan3 docs/configs.md, "256x256 resolution"): --batch-gpu 16 for T, 8 for R.
NVIDIA_1GPU_256 = {
    "stylegan3-t": {"batch_gpu": 16, "V100": 89.15, "A100": 49.81, "mem_gb": 9.5},
    "stylegan3-r": {"batch_gpu": 8, "V100": 87.37, "A100": 56.73, "mem_gb": 6.7},
}
ARCHITECTURES = tuple(NVIDIA_1GPU_256)


@dataclass
class Row:
    """One measured figure."""

    item: str
    value: float | None
    unit: str
    reference: str = ""
    note: str = ""


@dataclass
class PartResult:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str = ""
    peak_memory_gb: float | None = None
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """Where and how big: the real sizes on a GPU, tiny ones for the CPU dry run."""

    device: torch.device
    dry_run: bool
    resolution: int
    sg3_batch: int
    sg3_steps: int
    sg3_warmup: int
    translator_size: int
    translator_steps: int
    op_batch: int
    min_seconds: float

    @classmethod
    def for_run(cls, dry_run: bool, sg3_steps: int) -> Settings:
        if dry_run:
            return cls(torch.device("cpu"), True, 32, 8, 1, 1, 32, 1, 1, 0.0)
        return cls(torch.device("cuda"), False, 256, 32, sg3_steps, 2, 256, 20, 4, 0.2)


# ------------------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(run: Callable[[], Any], device: torch.device, min_seconds: float) -> float:
    """Mean wall time of ``run`` after one warm-up call, over at least ``min_seconds`` (and at
    least one call)."""
    run()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        run()
        synchronize(device)
        calls += 1
    return (time.perf_counter() - start) / calls


@contextmanager
def peak_memory(device: torch.device, result: PartResult) -> Iterator[None]:
    """Record the part's peak CUDA memory (GB) in ``result``."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        if device.type == "cuda":
            result.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 2**30


def gpu_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, dry run)"


# ------------------------------------------------------------------------------- parts


def part_build(settings: Settings, result: PartResult) -> None:
    """Build (or load from the cache) the CUDA extension."""
    from src.stylegan3.ops.cuda.build import build_extension, extension_dir

    cached = any(extension_dir().glob("*.so"))
    start = time.perf_counter()
    build_extension()
    seconds = time.perf_counter() - start
    result.rows.append(Row("build", seconds, "s", note="cache hit" if cached else "built"))
    print(f"gpu_check: ops {'found in the cache' if cached else 'built'} in {seconds:.1f}s")


def part_pytest_cuda(_settings: Settings, result: PartResult, timeout: float) -> None:
    """``pytest -m cuda``: pass/fail counts; a failure fails the part."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    result.rows.append(Row("pytest -m cuda", float(done.returncode), "exit code", note=summary))
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m cuda failed: {summary}\n{done.stdout[-2000:]}")


OpRun = Callable[[str, torch.Tensor], torch.Tensor]


def sg3_layers(resolution: int) -> list[Any]:
    """Representative synthesis layers of StyleGAN3-T at ``resolution``: the first, one where
    the sampling rate doubles, one in the middle, the last critically sampled one and ToRGB."""
    from src.stylegan3.generator import SynthesisNetwork

    channels = {"channel_base": 32768, "channel_max": 512}
    if resolution < 256:
        channels = {"channel_base": 256, "channel_max": 8}
    synthesis = SynthesisNetwork(512, resolution, 3, **channels)
    layers = [getattr(synthesis, name) for name in synthesis.layer_names]
    doubling = next(layer for layer in layers if layer.up_factor == 4)
    return [layers[0], doubling, layers[len(layers) // 2 + 1], layers[-2], layers[-1]]


def op_cases(settings: Settings) -> list[tuple[str, OpRun, list[int]]]:
    """(name, run(impl, x), input shape) for filtered_lrelu at each representative layer and
    bias_act / upfirdn2d at the shapes those layers feed them."""
    from src.stylegan3.ops import bias_act, filtered_lrelu, upfirdn2d

    cases = []
    for layer in sg3_layers(settings.resolution):
        size = layer.in_size + layer.conv_kernel - 1
        shape = [settings.op_batch, layer.out_channels, size, size]
        fu, fd = layer.up_filter, layer.down_filter
        fu = None if fu is None else fu.to(settings.device)
        fd = None if fd is None else fd.to(settings.device)
        bias = layer.bias.detach().to(settings.device)

        def run_flrelu(
            impl: str, x: torch.Tensor, layer=layer, fu=fu, fd=fd, bias=bias
        ) -> torch.Tensor:
            return filtered_lrelu(
                x,
                fu,
                fd,
                bias.to(x.dtype),
                layer.up_factor,
                layer.down_factor,
                layer.padding,
                layer.gain,
                layer.slope,
                layer.conv_clamp,
                impl=impl,
            )

        cases.append((f"filtered_lrelu {layer_label(layer)}", run_flrelu, shape))
    last = sg3_layers(settings.resolution)[1]
    size = last.in_size + last.conv_kernel - 1
    shape = [settings.op_batch, last.out_channels, size, size]
    up_filter = last.up_filter.to(settings.device)

    def run_up(impl: str, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, up_filter, up=last.up_factor, padding=last.padding, impl=impl)

    def run_bias_act(impl: str, x: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
        return bias_act(x, bias, act="lrelu", clamp=256, impl=impl)

    cases.append((f"upfirdn2d up {last.up_factor} {layer_label(last)}", run_up, shape))
    cases.append((f"bias_act lrelu {layer_label(last)}", run_bias_act, shape))
    return cases


def layer_label(layer: Any) -> str:
    return f"[{layer.out_channels}x{layer.in_size}->{layer.out_size}]"


def time_op(run: OpRun, impl: str, x: torch.Tensor, settings: Settings) -> tuple[float, float]:
    """Milliseconds per forward and per forward+backward of ``run(impl, x)``."""
    x_grad = x.detach().requires_grad_(True)

    def forward() -> torch.Tensor:
        return run(impl, x)

    def forward_backward() -> None:
        run(impl, x_grad).float().square().mean().backward()

    return (
        seconds_per_call(forward, settings.device, settings.min_seconds) * 1e3,
        seconds_per_call(forward_backward, settings.device, settings.min_seconds) * 1e3,
    )


def part_ops(settings: Settings, result: PartResult) -> None:
    """Forward and forward+backward of each op case in float32 and float16: our kernels (the
    value) against our reference path (the note: its time, the speed-up, the largest relative
    difference). The dry run times the reference only. A failing case is noted, the others go
    on, and the part fails at the end."""
    failures = []
    for name, run, shape in op_cases(settings):
        for dtype in (torch.float32, torch.float16):
            label = f"{name} {str(dtype).removeprefix('torch.')}"
            generator = torch.Generator(device=settings.device).manual_seed(0)
            x = torch.randn(shape, generator=generator, device=settings.device).to(dtype)
            try:
                ref = time_op(run, "ref", x, settings)
                if settings.dry_run:
                    for pass_name, ms in zip(("fwd", "fwd+bwd"), ref, strict=True):
                        result.rows.append(Row(f"{label} {pass_name}", ms, "ms", note="ref"))
                    continue
                kernels = time_op(run, "cuda", x, settings)
                expected = run("ref", x).float()
                error = (run("cuda", x).float() - expected).abs().max()
                error = float(error / expected.abs().max().clamp_min(1e-12))
            except Exception as failure:  # record it, time the other cases
                failures.append(f"{label}: {type(failure).__name__}: {failure}")
                result.rows.append(Row(label, None, "", note=f"failed: {failures[-1][:120]}"))
                continue
            for pass_name, ours, theirs in zip(("fwd", "fwd+bwd"), kernels, ref, strict=True):
                note = f"ref {theirs:.3g} ms, x{theirs / ours:.1f}, rel. diff {error:.1e}"
                result.rows.append(Row(f"{label} {pass_name} kernels", ours, "ms", note=note))
    if failures:
        raise RuntimeError(f"{len(failures)} op case(s) failed, first: {failures[0]}")


def sg3_kwargs(architecture: str, settings: Settings) -> tuple[dict, dict]:
    """Official G and D kwargs at the check's resolution (tiny channels in the dry run)."""
    from src.stylegan3.training import discriminator_kwargs, generator_kwargs

    g_over: dict[str, Any] = {}
    d_over: dict[str, Any] = {}
    if settings.dry_run:
        small = {"channel_base": 256, "channel_max": 8}
        g_over = {**small, "z_dim": 16, "w_dim": 16, "num_layers": 3, "num_critical": 1}
        g_over["margin_size"] = 2
        d_over = dict(small)
    resolution, batch = settings.resolution, settings.sg3_batch
    return (
        generator_kwargs(architecture, resolution, batch, g_over),
        discriminator_kwargs(resolution, 0, 4, d_over),
    )


def part_sg3_generator(settings: Settings, result: PartResult) -> None:
    """Generator forward (no grad, fp16 layers as built) images/s, T and R."""
    from src.stylegan3.legacy import build_network

    for architecture in ARCHITECTURES:
        g_kwargs, _ = sg3_kwargs(architecture, settings)
        generator = build_network("G", g_kwargs).eval().to(settings.device)
        z = torch.randn([settings.sg3_batch, generator.z_dim], device=settings.device)
        for force_fp32 in (False, True):

            def forward(
                generator: Any = generator, z: torch.Tensor = z, force_fp32: bool = force_fp32
            ) -> Any:
                return generator(z, None, noise_mode="const", force_fp32=force_fp32)

            with torch.no_grad():
                seconds = seconds_per_call(forward, settings.device, settings.min_seconds * 5)
            precision = "float32 (force_fp32)" if force_fp32 else "fp16 layers"
            label = f"{architecture} G forward, batch {settings.sg3_batch}, {precision}"
            result.rows.append(Row(label, settings.sg3_batch / seconds, "img/s"))
        del generator


def write_random_images(folder: Path, count: int, size: int) -> Path:
    """``count`` random PNGs of ``size`` px: the speed does not depend on what they show."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


class StepTimer(L.Callback):
    """Every training step's wall time (CUDA synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter() - self._start)


def quiet_trainer(
    settings: Settings, max_steps: int, callbacks: list[L.Callback], **kwargs: Any
) -> L.Trainer:
    """A Trainer on the check's device without loggers, checkpoints or progress bars."""
    return L.Trainer(
        accelerator=settings.device.type,
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kwargs,
    )


def part_sg3_train(settings: Settings, result: PartResult) -> None:
    """The full training step (G, D, lazy R1 every 16, EMA, ADA) at batch 32 in batch_gpu
    passes; the measured steps span 16 iterations, so they hold one R1 step as on average."""
    from src.stylegan3.training import StyleGAN3Training, TrainingOptions

    with tempfile.TemporaryDirectory() as tmp:
        data = write_random_images(Path(tmp) / "data", 64, settings.resolution)
        for architecture in ARCHITECTURES:
            figures = NVIDIA_1GPU_256[architecture]
            # The dry run still splits its batch in two passes.
            batch_gpu = settings.sg3_batch // 2 if settings.dry_run else figures["batch_gpu"]
            g_kwargs, d_kwargs = sg3_kwargs(architecture, settings)
            steps = settings.sg3_warmup + settings.sg3_steps
            options = TrainingOptions(
                data=str(data),
                resolution=settings.resolution,
                G_kwargs=g_kwargs,
                D_kwargs=d_kwargs,
                batch=settings.sg3_batch,
                batch_gpu=batch_gpu,
                kimg=steps * settings.sg3_batch / 1000,
                snap=1e9,
                aug="ada",
                grid_size=1,
                num_workers=2 if not settings.dry_run else 0,
            )
            module = StyleGAN3Training(options)
            timer = StepTimer(settings.device)
            if settings.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(settings.device)
            quiet_trainer(settings, -1, [timer], use_distributed_sampler=False).fit(module)
            measured = timer.times[settings.sg3_warmup :] or timer.times
            step = sum(measured) / len(measured)
            sec_per_kimg = step / (settings.sg3_batch / 1000)
            reference = f"A100 {figures['A100']}, V100 {figures['V100']} s/kimg"
            label = f"{architecture} G+D step, batch {settings.sg3_batch}, batch_gpu {batch_gpu}"
            result.rows.append(Row(label, sec_per_kimg, "s/kimg", reference))
            if settings.device.type == "cuda":
                memory = torch.cuda.max_memory_allocated(settings.device) / 2**30
                result.rows.append(
                    Row(f"{architecture} peak memory", memory, "GB", f"{figures['mem_gb']} GB")
                )
            del module


def translator_module(name: str, size: int, dry_run: bool) -> Any:
    """The stage's Lightning module at its default architecture for ``size`` px (tiny widths
    in the dry run)."""
    if name == "pix2pix":
        from src.pix2pix.model import Pix2PixModule

        width = 8 if dry_run else 64
        return Pix2PixModule(
            {"netG": f"unet_{size}", "ngf": width, "norm": "batch"},
            {"ndf": width, "input_nc": 6},
        )
    if name == "cyclegan":
        from src.cyclegan.model import CycleGANModule

        return CycleGANModule(
            {
                "netG": "resnet_2blocks" if dry_run else "resnet_9blocks",
                "ngf": 4 if dry_run else 64,
            },
            {"netD": "basic", "input_nc": 3, "ndf": 4 if dry_run else 64, "norm": "instance"},
        )
    from src.photo2cartoon.training import Photo2CartoonTraining

    return Photo2CartoonTraining(
        generator={
            "kind": "photo2cartoon",
            "ngf": 4 if dry_run else 32,
            "img_size": size,
            "light": True,
            "n_res": 1 if dry_run else 4,
        },
        ndf=4 if dry_run else 32,
        global_layers=6 if dry_run else 7,
        local_layers=5,
        weights={"faceid": 0.0},
    )


def part_translator(name: str, settings: Settings, result: PartResult) -> None:
    """Training iterations/s (one D and one G step each) at batch 1."""
    from torch.utils.data import DataLoader

    size = 64 if settings.dry_run and name == "photo2cartoon" else settings.translator_size
    generator = torch.Generator().manual_seed(0)
    images = [
        {
            "A": torch.rand(3, size, size, generator=generator) * 2 - 1,
            "B": torch.rand(3, size, size, generator=generator) * 2 - 1,
        }
        for _ in range(4)
    ]
    module = translator_module(name, size, settings.dry_run)
    timer = StepTimer(settings.device)
    iterations = settings.translator_steps
    # Two optimiser steps (D, G) per iteration count towards max_steps.
    quiet_trainer(settings, 2 * (iterations + 1), [timer]).fit(
        module, DataLoader(images, batch_size=1)
    )
    measured = timer.times[1:] or timer.times
    result.rows.append(
        Row(f"{name} training at {size} px, batch 1", len(measured) / sum(measured), "it/s")
    )


# ------------------------------------------------------------------------------- runner


class GpuCheck:
    """Runs the parts within the time budget and collects their results."""

    def __init__(self, settings: Settings, budget_s: float) -> None:
        self.settings = settings
        self.deadline = time.perf_counter() + budget_s
        self.started = time.perf_counter()
        self.parts: list[PartResult] = []

    def run(self, name: str, fn: Callable[[PartResult], None], skip: str = "") -> None:
        """Run one part: skipped with ``skip`` as the reason, or past the deadline; a raised
        error marks it failed (with the error's last line) and the check goes on."""
        result = PartResult(name, "ok", 0.0)
        self.parts.append(result)
        if not skip and time.perf_counter() > self.deadline:
            skip = "time budget spent"
        if skip:
            result.status, result.detail = "skipped", skip
            print(f"gpu_check: {name} skipped: {skip}")
            return
        print(f"gpu_check: {name} ...", flush=True)
        start = time.perf_counter()
        try:
            with peak_memory(self.settings.device, result):
                fn(result)
        except Exception as error:  # one failed part must not stop the others
            result.status = "failed"
            result.detail = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            traceback.print_exc()
        result.seconds = time.perf_counter() - start
        print(f"gpu_check: {name} {result.status} in {result.seconds:.1f}s", flush=True)

    def report(self) -> dict[str, Any]:
        device = self.settings.device
        return {
            "format": "toonforge-gpu-check-1",
            "dry_run": self.settings.dry_run,
            "device": gpu_name(device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "total_seconds": time.perf_counter() - self.started,
            "nvidia_1gpu_256": NVIDIA_1GPU_256,
            "ok": all(part.status != "failed" for part in self.parts),
            "parts": [asdict(part) for part in self.parts],
        }


def format_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def result_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"gpu_check on {report['device']} (torch {report['torch']})")
    for column in ("part", "status", "item", "value", "unit", "NVIDIA published", "note"):
        table.add_column(column)
    for part in report["parts"]:
        memory = part["peak_memory_gb"]
        status = part["status"] + (
            f" {part['seconds']:.0f}s" if part["status"] != "skipped" else ""
        )
        if memory is not None:
            status += f", peak {memory:.2f} GB"
        if not part["rows"]:
            table.add_row(part["name"], status, part["detail"], "", "", "", "")
        for index, row in enumerate(part["rows"]):
            table.add_row(
                part["name"] if index == 0 else "",
                status if index == 0 else "",
                row["item"],
                format_value(row["value"]),
                row["unit"],
                row["reference"],
                row["note"] or (part["detail"] if index == 0 else ""),
            )
    return table


def run_check(dry_run: bool, out: Path, budget_s: float, sg3_steps: int = 16) -> dict[str, Any]:
    """Run every part (see the module doc), print the table and write ``out`` atomically."""
    if not dry_run and not torch.cuda.is_available():
        raise UserError("gpu_check: no CUDA device is visible; run with --cpu-dry-run on a CPU")
    settings = Settings.for_run(dry_run, sg3_steps)
    check = GpuCheck(settings, budget_s)
    no_cuda = "no CUDA in the CPU dry run" if dry_run else ""

    def pytest_cuda(result: PartResult) -> None:
        # The tests may use what is left of the budget, and at least half a minute.
        part_pytest_cuda(settings, result, max(check.deadline - time.perf_counter(), 30.0))

    check.run("build", lambda r: part_build(settings, r), skip=no_cuda)
    check.run("pytest_cuda", pytest_cuda, skip=no_cuda)
    check.run("ops", lambda r: part_ops(settings, r))
    check.run("sg3_generator", lambda r: part_sg3_generator(settings, r))
    check.run("sg3_train", lambda r: part_sg3_train(settings, r))
    for name in ("pix2pix", "cyclegan", "photo2cartoon"):
        check.run(name, lambda r, name=name: part_translator(name, settings, r))
    report = check.report()
    Console(width=160).print(result_table(report))
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {'all parts ran' if report['ok'] else 'some parts FAILED'}; wrote {out}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m src.gpu_check`` (argparse exits 2 on a bad one)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting parts after")
    parser.add_argument("--sg3-steps", type=int, default=16, help="timed StyleGAN3 steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 0 when every part ran, 1 when one failed, 2 on a user error."""
    args = parse_args(argv)
    try:
        report = run_check(args.cpu_dry_run, args.out, args.budget_s, args.sg3_steps)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
