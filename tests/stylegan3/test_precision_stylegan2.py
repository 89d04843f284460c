"""StyleGAN2 generator mixed precision as the official ``networks_stylegan2.py`` runs it: which
blocks run in float16, what is cast (features in the block's dtype, the skip image float32,
weights cast per forward, channels-last), where ``conv_clamp`` applies, the fp16 pre-normalisation
of the modulated conv, the fused-modconv rule, fp32 on CPU, and official pickles' fp16 options.

The float16 path is exercised on the CPU with the ``fp16_on_cpu`` switch (see conftest)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from src.stylegan3 import precision, stylegan2
from src.stylegan3.legacy import load_official_pickle
from src.stylegan3.precision import fp16_layers
from src.stylegan3.stylegan2 import (
    Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    modulated_conv2d,
)
from tests.stylegan3.official import OfficialModules
from tests.stylegan3.test_stylegan2 import (
    ADA_D_KWARGS,
    ADA_G_KWARGS,
    outputs,
    write_release_pickle,
)

TINY = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 32, "img_channels": 3}
TINY_CHANNELS = {"channel_base": 256, "channel_max": 16, "mapping_kwargs": {"num_layers": 2}}


def tiny_generator(seed: int = 0, **kwargs: Any) -> Generator:
    """A 32 px StyleGAN2 generator with noise strengths moved off zero, in eval mode."""
    torch.manual_seed(seed)
    generator = Generator(**TINY, **{**TINY_CHANNELS, **kwargs})
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.3)
    return generator.eval()


def fp16_resolutions(resolution: int, num_fp16_res: int) -> list[int]:
    synthesis = SynthesisNetwork(
        16, resolution, 3, channel_base=4096, channel_max=4, num_fp16_res=num_fp16_res
    )
    return [block.resolution for block in fp16_layers(synthesis)]


def record_dtypes(network: torch.nn.Module) -> dict[str, Any]:
    """Hooks recording, by module name, each block's (features, image) dtypes and each layer's
    output dtype."""
    seen: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def record(_module: torch.nn.Module, _inputs: Any, out: Any) -> None:
            if isinstance(out, tuple):
                seen[name] = tuple(None if t is None else t.dtype for t in out)
            else:
                seen[name] = out.dtype

        return record

    for name, module in network.named_modules():
        if isinstance(module, SynthesisBlock | SynthesisLayer | ToRGBLayer):
            module.register_forward_hook(hook(name))
    return seen


def test_fp16_blocks_are_the_official_highest_resolutions() -> None:
    # fp16_resolution = max(2 ** (log2(res) + 1 - num_fp16_res), 8), as the release.
    assert fp16_resolutions(256, 4) == [32, 64, 128, 256]
    assert fp16_resolutions(256, 1) == [256]
    assert fp16_resolutions(1024, 4) == [128, 256, 512, 1024]
    assert fp16_resolutions(32, 9) == [8, 16, 32]  # never below 8 px
    assert fp16_resolutions(256, 0) == []
    # The tiny StyleGAN2 the tests share (16 px, num_fp16_res 4): blocks 8 and 16.
    from tests.stylegan3.tiny import SG2_G_KWARGS

    assert [b.resolution for b in fp16_layers(Generator(**SG2_G_KWARGS))] == [8, 16]


def test_fp16_channels_last_stores_the_fp16_blocks_weights_channels_last() -> None:
    generator = tiny_generator(num_fp16_res=2, fp16_channels_last=True, architecture="resnet")
    synthesis = generator.synthesis
    for res in (16, 32):
        block = getattr(synthesis, f"b{res}")
        assert block.channels_last
        # resnet: ToRGB in the last block only.
        layers = [block.conv0, block.conv1, block.skip] + ([block.torgb] if res == 32 else [])
        for layer in layers:
            assert layer.weight.is_contiguous(memory_format=torch.channels_last), (res, layer)
    assert not synthesis.b8.channels_last
    assert synthesis.b8.conv0.weight.is_contiguous()
    # The layout is the weights' only change: same names and shapes as without it.
    plain = tiny_generator(num_fp16_res=2, architecture="resnet")
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in generator.state_dict().items()} == shapes


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_fp16_blocks_cast_per_block_and_stay_close_to_fp32(
    fp16_on_cpu: None, architecture: str
) -> None:
    # 32 px, num_fp16_res 2: blocks 16 and 32 in float16, 4 and 8 in float32.
    generator = tiny_generator(num_fp16_res=2, architecture=architecture)
    dtypes = record_dtypes(generator)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = generator(z, None, noise_mode="const")
    assert image.dtype == torch.float32
    for res in (4, 8, 16, 32):
        dtype = torch.float16 if res >= 16 else torch.float32
        block = getattr(generator.synthesis, f"b{res}")
        image_dtype = torch.float32 if hasattr(block, "torgb") else None
        assert dtypes[f"synthesis.b{res}"] == (dtype, image_dtype), res
        assert dtypes[f"synthesis.b{res}.conv1"] == dtype, res
        if hasattr(block, "torgb"):
            assert dtypes[f"synthesis.b{res}.torgb"] == dtype, res
    # The weights stay float32 parameters: the cast happens per forward.
    assert {p.dtype for p in generator.parameters()} == {torch.float32}

    with torch.no_grad():
        reference = generator(z, None, noise_mode="const", force_fp32=True)
    assert {d for v in dtypes.values() for d in (v if isinstance(v, tuple) else (v,))} <= {
        torch.float32,
        None,
    }
    error = (image - reference).abs().max() / reference.abs().max()
    assert 0 < error < 1e-2


def test_training_pass_in_fp16_is_close_to_fp32(fp16_on_cpu: None) -> None:
    # Training mode runs the unfused modulated conv (activations scaled around one shared conv);
    # the gradients reach the float32 parameters.
    generator = tiny_generator(num_fp16_res=2).train()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    image = generator(z, None, noise_mode="const")
    image.square().mean().backward()
    weight = generator.synthesis.b32.conv1.weight
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    with torch.no_grad():
        reference = generator(z, None, noise_mode="const", force_fp32=True)
    error = (image.detach() - reference).abs().max() / reference.abs().max()
    assert 0 < error < 1e-2


def test_fused_modconv_rules(fp16_on_cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: set[tuple[torch.dtype, bool]] = set()
    real = stylegan2.modulated_conv2d

    def spy(x: torch.Tensor, *args: Any, fused_modconv: bool = True, **kwargs: Any) -> Any:
        calls.add((x.dtype, fused_modconv))
        return real(x, *args, fused_modconv=fused_modconv, **kwargs)

    monkeypatch.setattr(stylegan2, "modulated_conv2d", spy)

    def fused_by_dtype(generator: Generator, batch: int) -> set[tuple[torch.dtype, bool]]:
        calls.clear()
        with torch.no_grad():
            generator(torch.randn(batch, 16), None, noise_mode="const")
        return set(calls)

    half, full = torch.float16, torch.float32
    # StyleGAN2-ADA (no recorded default): fused outside training for float32 blocks, and for
    # float16 ones only on a batch of one.
    ada = tiny_generator(num_fp16_res=2)
    assert fused_by_dtype(ada, 2) == {(full, True), (half, False)}
    assert fused_by_dtype(ada, 1) == {(full, True), (half, True)}
    assert fused_by_dtype(ada.train(), 1) == {(full, False), (half, False)}
    # The StyleGAN3 repository's stylegan2 cfg: inference_only, whatever the dtype.
    sg3_repo = tiny_generator(num_fp16_res=2, fused_modconv_default="inference_only")
    assert fused_by_dtype(sg3_repo, 2) == {(full, True), (half, True)}
    assert fused_by_dtype(sg3_repo.train(), 2) == {(full, False), (half, False)}
    # An explicit fused_modconv wins; without the float16 switch every block is float32.
    with torch.no_grad():
        calls.clear()
        ada.eval()(torch.randn(2, 16), None, noise_mode="const", fused_modconv=False)
    assert calls == {(full, False), (half, False)}
    precision.FP16_DEVICE_TYPES.discard("cpu")
    assert fused_by_dtype(ada, 2) == {(full, True)}


def test_cpu_runs_float32_and_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference's rule on CPU: fp16 blocks compute in float32, exactly as force_fp32.
    generator = tiny_generator(num_fp16_res=4)
    assert len(fp16_layers(generator)) == 3
    dtypes = record_dtypes(generator)
    z = torch.randn(2, 16)
    with torch.no_grad():
        image = generator(z, None, noise_mode="const")
        forced = generator(z, None, noise_mode="const", force_fp32=True)
    assert torch.equal(image, forced)
    assert {v[0] for k, v in dtypes.items() if isinstance(v, tuple)} == {torch.float32}
    # num_fp16_res=0 builds no fp16 block: float32 even where float16 is enabled.
    monkeypatch.setattr(precision, "FP16_DEVICE_TYPES", {"cuda", "cpu"})
    fp32 = tiny_generator(num_fp16_res=0)
    assert fp16_layers(fp32) == []
    dtypes = record_dtypes(fp32)
    with torch.no_grad():
        fp32(z, None, noise_mode="const")
    assert {v[0] for k, v in dtypes.items() if isinstance(v, tuple)} == {torch.float32}


@pytest.mark.parametrize("fp16", [False, True])
def test_conv_clamp_bounds_every_layer_and_torgb(
    fp16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fp16:
        monkeypatch.setattr(precision, "FP16_DEVICE_TYPES", {"cuda", "cpu"})
    clamp = 0.5
    outputs_by_name: dict[str, torch.Tensor] = {}
    generator = tiny_generator(num_fp16_res=2, conv_clamp=clamp, architecture="resnet")
    for name, module in generator.named_modules():
        if isinstance(module, SynthesisLayer | ToRGBLayer):
            module.register_forward_hook(
                lambda _m, _i, out, name=name: outputs_by_name.__setitem__(name, out)
            )
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, SynthesisLayer | ToRGBLayer):
                module.weight.mul_(100)
        generator(torch.randn(2, 16), None, noise_mode="const")
    expected = torch.float16 if fp16 else torch.float32
    assert outputs_by_name["synthesis.b32.conv0"].dtype == expected
    for name, out in outputs_by_name.items():
        # resnet's conv1 runs with gain sqrt(0.5), which scales its clamp too (act_clamp).
        bound = clamp * (math.sqrt(0.5) if name.endswith("conv1") and "b4." not in name else 1)
        assert float(out.abs().max()) <= bound * (1 + 1e-3), name
    # Without the clamp the same weights overshoot it.
    free = tiny_generator(num_fp16_res=2, conv_clamp=None, architecture="resnet")
    seen: list[float] = []
    free.synthesis.b32.torgb.register_forward_hook(
        lambda _m, _i, out: seen.append(float(out.abs().max()))
    )
    with torch.no_grad():
        free.synthesis.b32.torgb.weight.mul_(100)
        free(torch.randn(2, 16), None, noise_mode="const")
    assert seen[0] > clamp


@pytest.mark.parametrize("fused", [True, False])
def test_fp16_modulated_conv_prenormalises_so_nothing_overflows(fused: bool) -> None:
    # Styles of 1e5 overflow float16 (max 65504) unless scaled first, as the reference does for
    # float16 input with demodulation; demodulation cancels the scale, so the result is as fp32.
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 6, 6, generator=generator)
    weight = torch.randn(4, 8, 3, 3, generator=generator) * 50
    styles = (torch.rand(2, 8, generator=generator) + 0.5) * 1e5
    half = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=fused)
    reference = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_ada_pickle_records_fp16_options_that_load_as_recorded(
    tmp_path: Path, official_stubs: OfficialModules, channels_last: bool
) -> None:
    # StyleGAN2-ADA's train.py records synthesis_kwargs num_fp16_res=4 and conv_clamp=256 (and
    # fp16_channels_last with --nhwc); the loader builds the network with them.
    synthesis = {**ADA_G_KWARGS["synthesis_kwargs"], "num_fp16_res": 4, "conv_clamp": 256}
    if channels_last:
        synthesis["fp16_channels_last"] = True
    g_kwargs = {**ADA_G_KWARGS, "synthesis_kwargs": synthesis}
    d_kwargs = {**ADA_D_KWARGS, "num_fp16_res": 4, "conv_clamp": 256}
    path = tmp_path / "network-snapshot.pkl"
    ours = write_release_pickle(path, official_stubs, g_kwargs, d_kwargs)

    loaded = load_official_pickle(path)

    for kind in ("G", "G_ema"):
        generator = loaded[kind]
        assert [b.resolution for b in fp16_layers(generator)] == [8, 16]
        assert generator.synthesis.b16.conv1.conv_clamp == 256
        assert generator.synthesis.b16.torgb.conv_clamp == 256
        assert generator.synthesis.b16.channels_last == channels_last
    assert [b.resolution for b in fp16_layers(loaded["D"])] == [16, 8]
    assert loaded["configs"]["G"] == g_kwargs
    # On the CPU they run in float32: exactly the outputs of the networks that wrote the file.
    got = outputs(loaded["G"].eval(), loaded["G_ema"].eval(), loaded["D"].eval())
    for ref, out in zip(outputs(*ours), got, strict=True):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.cuda
def test_fp16_blocks_compute_in_float16_on_cuda() -> None:
    # Without the CPU switch: the official rule, float16 on CUDA for the fp16 blocks only.
    generator = tiny_generator(num_fp16_res=2, fp16_channels_last=True).cuda()
    dtypes = record_dtypes(generator)
    z = torch.randn(4, 16, device="cuda")
    with torch.no_grad():
        image = generator(z, None, noise_mode="const")
        reference = generator(z, None, noise_mode="const", force_fp32=True)
    for res in (4, 8, 16, 32):
        dtype = torch.float16 if res >= 16 else torch.float32
        assert dtypes[f"synthesis.b{res}"] == (dtype, torch.float32), res
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    assert (image - reference).abs().max() / reference.abs().max() < 1e-2
