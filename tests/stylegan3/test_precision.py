"""Mixed precision as NVIDIA's networks run it (which layers, what is cast, the clamp, fp32 on CPU
and with num_fp16_res=0 / force_fp32), and the official call signatures and mbstd options.

CPU float16 convolutions exist in current torch, so the fp16 path is exercised here by adding
"cpu" to ``precision.FP16_DEVICE_TYPES`` (the reference enables it on CUDA only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.stylegan3 import precision
from src.stylegan3.discriminator import DiscriminatorBlock, MinibatchStdLayer
from src.stylegan3.generator import SynthesisLayer, SynthesisNetwork, modulated_conv2d
from src.stylegan3.legacy import build_network
from src.stylegan3.networks import Discriminator, Generator
from src.stylegan3.precision import fp16_layers

TINY_G = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 32, "img_channels": 3}
TINY_G_CHANNELS = {"channel_base": 512, "channel_max": 16}
TINY_D_CHANNELS = {"channel_base": 256, "channel_max": 16}


def tiny_generator(seed: int = 0, **kwargs: object) -> Generator:
    torch.manual_seed(seed)
    return Generator(**TINY_G, **{**TINY_G_CHANNELS, **kwargs}).eval()


def tiny_discriminator(seed: int = 0, resolution: int = 32, **kwargs: object) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(0, resolution, 3, **{**TINY_D_CHANNELS, **kwargs})


def output_dtypes(network: torch.nn.Module, kinds: tuple[type, ...]) -> dict[str, torch.dtype]:
    """Hooks recording the output dtype of every submodule of ``kinds``, by name."""
    seen: dict[str, torch.dtype] = {}
    for name, module in network.named_modules():
        if isinstance(module, kinds):
            module.register_forward_hook(
                lambda _m, _i, out, name=name: seen.__setitem__(name, out.dtype)
            )
    return seen


def test_generator_fp16_layers_are_the_official_highest_sampling_rates() -> None:
    # The StyleGAN3-T 256 schedule (small channels): sampling rates 16 (L0-L2, 36 px), 32 (L3,
    # L4), 64 (L5, L6), 128 (L7-L9), 256 (L10-L14). num_fp16_res=4 keeps rate * 2**4 > 256:
    # every layer from L3 on, as the official T-256 pickle's use_fp16 flags.
    synthesis = SynthesisNetwork(16, 256, 3, channel_base=256, channel_max=8)
    fp16 = [name for name in synthesis.layer_names if getattr(synthesis, name).use_fp16]
    assert fp16 == synthesis.layer_names[3:]
    assert [name.split("_")[1] for name in synthesis.layer_names[:4]] == ["36", "36", "36", "52"]
    for num_fp16_res, first in ((1, 10), (2, 7), (3, 5), (5, 0)):
        synthesis = SynthesisNetwork(
            16, 256, 3, channel_base=256, channel_max=8, num_fp16_res=num_fp16_res
        )
        flags = [getattr(synthesis, name).use_fp16 for name in synthesis.layer_names]
        assert flags == [index >= first for index in range(15)], num_fp16_res
    assert fp16_layers(tiny_generator(num_fp16_res=0)) == []


def test_discriminator_fp16_blocks_are_the_official_highest_resolutions() -> None:
    disc = tiny_discriminator(resolution=256)
    assert [b.resolution for b in fp16_layers(disc)] == [256, 128, 64, 32]
    assert [b.resolution for b in fp16_layers(tiny_discriminator(num_fp16_res=2))] == [32, 16]
    # Never below 8 px, however many are asked for.
    assert [b.resolution for b in fp16_layers(tiny_discriminator(num_fp16_res=9))] == [32, 16, 8]
    assert fp16_layers(tiny_discriminator(num_fp16_res=0)) == []


def test_generator_fp16_path_casts_per_layer_and_stays_close_to_fp32(fp16_on_cpu: None) -> None:
    # At 32 px num_fp16_res=1 puts the layers sampled at 32 in float16, those at 16 in float32.
    generator = tiny_generator(num_fp16_res=1)
    dtypes = output_dtypes(generator, (SynthesisLayer,))
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    image = generator(z, None)
    assert image.dtype == torch.float32
    synthesis = generator.synthesis
    for name in synthesis.layer_names:
        expected = torch.float16 if getattr(synthesis, name).use_fp16 else torch.float32
        assert dtypes[f"synthesis.{name}"] == expected, name
    assert torch.float16 in dtypes.values() and torch.float32 in dtypes.values()
    # The weights stay float32 parameters: the cast happens per forward.
    assert {p.dtype for p in generator.parameters()} == {torch.float32}

    reference = generator(z, None, force_fp32=True)
    assert set(dtypes.values()) == {torch.float32}
    error = (image - reference).abs().max() / reference.abs().max()
    assert 0 < error < 1e-2


def test_generator_runs_float32_on_cpu_and_without_fp16_resolutions(fp16_on_cpu: None) -> None:
    z = torch.randn(2, 16)
    fp32_generator = tiny_generator(num_fp16_res=0)
    dtypes = output_dtypes(fp32_generator, (SynthesisLayer,))
    fp32_generator(z, None)
    assert set(dtypes.values()) == {torch.float32}

    precision.FP16_DEVICE_TYPES.discard("cpu")  # back to the reference: CUDA only
    generator = tiny_generator()
    dtypes = output_dtypes(generator, (SynthesisLayer,))
    generator(z, None)
    assert set(dtypes.values()) == {torch.float32}


@pytest.mark.parametrize("scale", [1e-12, 1e10])
def test_modulated_conv_prenormalises_weight_and_styles_as_the_reference(scale: float) -> None:
    # The reference scales the weight (per output channel) and the styles to unit RMS before
    # modulating: demodulation cancels any scale, so neither underflow into the 1e-8 epsilon nor
    # float32 overflow of the modulated weights ((1e10 * 1e10) ** 2) changes the result.
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 5, 5, generator=generator)
    weight = torch.randn(4, 6, 3, 3, generator=generator)
    styles = torch.rand(2, 6, generator=generator) + 0.5
    reference = modulated_conv2d(x, weight, styles, padding=2)
    scaled = modulated_conv2d(x, weight * scale, styles * scale, padding=2)
    torch.testing.assert_close(scaled, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fp16", [False, True])
def test_conv_clamp_bounds_the_torgb_output(fp16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if fp16:
        monkeypatch.setattr(precision, "FP16_DEVICE_TYPES", {"cuda", "cpu"})
    generator = tiny_generator(conv_clamp=0.1, num_fp16_res=1)
    torgb = getattr(generator.synthesis, generator.synthesis.layer_names[-1])
    assert torgb.use_fp16
    with torch.no_grad():
        torgb.weight.mul_(1000)
        image = generator(torch.randn(2, 16), None)
        unclamped = tiny_generator(conv_clamp=None, num_fp16_res=1)
        getattr(unclamped.synthesis, unclamped.synthesis.layer_names[-1]).weight.mul_(1000)
        free = unclamped(torch.randn(2, 16), None)
    # ToRGB has no filters, so the clamp bounds the image: 0.1 * output_scale 0.25.
    assert image.abs().max() <= 0.025 + 1e-6
    assert free.abs().max() > 0.025


def test_discriminator_fp16_blocks_cast_and_channels_last(fp16_on_cpu: None) -> None:
    disc = tiny_discriminator(num_fp16_res=2, block_kwargs={"fp16_channels_last": True})
    dtypes = output_dtypes(disc, (DiscriminatorBlock,))
    layouts: dict[str, bool] = {}
    for res in (32, 16, 8):
        getattr(disc, f"b{res}").conv0.register_forward_hook(
            lambda _m, inputs, _o, res=res: layouts.__setitem__(
                res, inputs[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    scores = disc(img, None)
    assert scores.dtype == torch.float32
    assert dtypes == {"b32": torch.float16, "b16": torch.float16, "b8": torch.float32}
    assert layouts == {32: True, 16: True, 8: False}
    assert disc.b32.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    assert {p.dtype for p in disc.parameters()} == {torch.float32}

    reference = disc(img, None, force_fp32=True)
    # force_fp32 hands blocks contiguous float32 input (the weights keep their layout).
    assert set(dtypes.values()) == {torch.float32} and not layouts[16]
    error = (scores - reference).abs().max() / reference.abs().max()
    assert 0 < error < 1e-2


def test_discriminator_conv_clamp_holds_in_fp16(fp16_on_cpu: None) -> None:
    disc = tiny_discriminator(num_fp16_res=1, conv_clamp=0.5)
    outputs: list[torch.Tensor] = []
    disc.b32.conv0.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    with torch.no_grad():
        disc.b32.conv0.weight.mul_(1000)
        disc(torch.randn(2, 3, 32, 32), None)
    (out,) = outputs
    assert out.dtype == torch.float16 and out.abs().max() <= 0.5


def test_official_generator_call_signatures() -> None:
    generator = tiny_generator()
    z = torch.randn(3, 16)
    plain = generator(z, None, truncation_psi=0.7, truncation_cutoff=4)
    for mode in ("const", "random", "none"):
        image = generator(
            z, None, truncation_psi=0.7, truncation_cutoff=4, noise_mode=mode, force_fp32=True
        )
        assert torch.equal(image, plain), mode
    ws = generator.mapping(z, None, truncation_psi=0.7, truncation_cutoff=4)
    synthesized = generator.synthesis(ws, noise_mode="const", force_fp32=True, update_emas=False)
    assert torch.equal(synthesized, plain)
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        generator(z, None, noise_mode="constant")


def test_official_discriminator_call_signature() -> None:
    disc = tiny_discriminator(epilogue_kwargs={"mbstd_group_size": 3})
    img = torch.randn(3, 3, 32, 32)
    assert torch.equal(disc(img, None, force_fp32=True, update_emas=False), disc(img, None))


def test_mbstd_group_size_none_takes_the_whole_batch() -> None:
    x = torch.randn(6, 4, 2, 2)
    whole = MinibatchStdLayer(None)(x)
    assert torch.equal(whole, MinibatchStdLayer(6)(x))
    std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(whole[:, 4], std.expand(6, 2, 2))
    disc = tiny_discriminator(epilogue_kwargs={"mbstd_group_size": None})
    assert disc(torch.randn(5, 3, 32, 32), None).shape == (5, 1)


def test_mbstd_num_channels_zero_drops_the_layer_as_the_official_code() -> None:
    config = {
        "c_dim": 0,
        "img_resolution": 32,
        "img_channels": 3,
        **TINY_D_CHANNELS,
        "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 0},
    }
    disc = build_network("D", config)
    assert disc.b4.mbstd is None
    # The epilogue conv reads only the features: [C, C + 0, 3, 3].
    channels = disc.b4.conv.weight.shape[0]
    assert disc.b4.conv.weight.shape == (channels, channels, 3, 3)
    with_mbstd = tiny_discriminator()
    assert set(disc.state_dict()) == set(with_mbstd.state_dict())
    assert with_mbstd.b4.conv.weight.shape == (channels, channels + 1, 3, 3)
    # No group constraint without the layer: any batch size works.
    assert disc(torch.randn(3, 3, 32, 32), None).shape == (3, 1)


@pytest.mark.parametrize("family", ["stylegan3", "stylegan2"])
def test_generate_dataset_gen_and_metrics_run_the_fp16_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    # Each loads networks through load_networks and calls them as the official tools do, so
    # with float16 enabled (CUDA; here the CPU) their pictures come from the fp16 layers (or,
    # for StyleGAN2, blocks).
    from src.dataset_gen.pairs import PairRenderer
    from src.stylegan3.legacy import load_networks
    from src.stylegan3.metrics import generator_sampler
    from tests.stylegan3.test_generate import run_generate
    from tests.stylegan3.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "g.pt", family=family)

    def outputs(tag: str) -> dict[str, torch.Tensor]:
        folder = run_generate(ckpt, tmp_path / tag)
        pictures = [np.asarray(Image.open(folder / f"seed{s:04d}.png")) for s in range(5)]
        networks = load_networks(ckpt)
        pair = PairRenderer(networks["G_ema"], load_networks(ckpt)["G_ema"]).images([0, 1])
        torch.manual_seed(0)  # the metrics draw StyleGAN2's noise at random, as the reference
        return {
            "generate": torch.from_numpy(np.stack(pictures)).float(),
            "dataset_gen": pair[1],
            "metrics": generator_sampler(networks["G_ema"], torch.device("cpu"))(2).detach(),
        }

    fp32 = outputs("fp32")
    monkeypatch.setattr(precision, "FP16_DEVICE_TYPES", {"cuda", "cpu"})
    assert fp16_layers(load_networks(ckpt)["G_ema"]), "the checkpoint's G has no fp16 layers"
    fp16 = outputs("fp16")
    for tool, reference in fp32.items():
        difference = (fp16[tool] - reference).abs()
        scale = 255 if tool == "generate" else float(reference.abs().max())
        assert 0 < difference.max() <= 0.02 * scale, tool


def test_stylegan_stages_keep_lightning_precision_at_32(capsys: pytest.CaptureFixture) -> None:
    from omegaconf import OmegaConf

    from src.stylegan3.precision import stylegan_trainer_precision

    plain = OmegaConf.create({"trainer": {"precision": "32-true"}})
    assert stylegan_trainer_precision(plain, "stylegan3") == "32-true"
    assert capsys.readouterr().out == ""
    chain_bf16 = OmegaConf.create({"trainer": {"precision": "bf16-mixed"}})
    assert stylegan_trainer_precision(chain_bf16, "dataset_gen") == "32-true"
    assert "dataset_gen: trainer.precision=bf16-mixed ignored" in capsys.readouterr().out


@pytest.mark.cuda
def test_fp16_layers_compute_in_float16_on_cuda() -> None:
    # Without the CPU switch: the official rule, float16 on CUDA for the fp16 layers only.
    generator = tiny_generator(num_fp16_res=1).cuda()
    dtypes = output_dtypes(generator, (SynthesisLayer,))
    z = torch.randn(4, 16, device="cuda")
    image = generator(z, None)
    synthesis = generator.synthesis
    for name in synthesis.layer_names:
        expected = torch.float16 if getattr(synthesis, name).use_fp16 else torch.float32
        assert dtypes[f"synthesis.{name}"] == expected, name
    reference = generator(z, None, force_fp32=True)
    assert image.dtype == torch.float32
    assert (image - reference).abs().max() / reference.abs().max() < 1e-2
    disc = tiny_discriminator(num_fp16_res=2).cuda()
    block_dtypes = output_dtypes(disc, (DiscriminatorBlock,))
    scores = disc(torch.randn(4, 3, 32, 32, device="cuda"), None)
    assert block_dtypes == {"b32": torch.float16, "b16": torch.float16, "b8": torch.float32}
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
