"""StyleGAN3 generator and StyleGAN2 discriminator: schedule, naming, shapes, equivariance."""

from __future__ import annotations

import math

import pytest
import torch

from src.stylegan3.networks import Discriminator, Generator, SynthesisLayer, layer_specs

T_1024 = [
    "L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512", "L6_148_512",
    "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51", "L12_1044_32",
    "L13_1024_32", "L14_1024_3",
]  # fmt: skip
R_1024 = [
    "L0_36_1024", "L1_36_1024", "L2_52_1024", "L3_52_1024", "L4_84_1024", "L5_148_1024",
    "L6_148_1024", "L7_276_645", "L8_276_406", "L9_532_256", "L10_1044_161", "L11_1044_102",
    "L12_1044_64", "L13_1024_64", "L14_1024_3",
]  # fmt: skip
SMALL = {"channel_base": 1024, "channel_max": 64}


def expected_names(res: int, channel_base: int, channel_max: int) -> list[str]:
    """The paper's schedule written out with scalar math, independently of ``layer_specs``."""
    names = []
    for i in range(15):
        e = min(i / 12, 1)
        cutoff = 2 * (res / 2 / 2) ** e
        stopband = 2**2.1 * (res / 2 * 2**0.3 / 2**2.1) ** e
        rate = 2 ** math.ceil(math.log2(min(2 * stopband, res)))
        size = res if i >= 13 else rate + 20
        channels = 3 if i == 14 else round(min(channel_base / 2 / cutoff, channel_max))
        names.append(f"L{i}_{size}_{channels}")
    return names


def small_generator(seed: int = 0, **kwargs: object) -> Generator:
    torch.manual_seed(seed)
    return Generator(
        z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, **SMALL, **kwargs
    )


@pytest.fixture(scope="module")
def generator() -> Generator:
    return small_generator().eval()


def test_layer_names_match_published_t_and_r_1024() -> None:
    assert [s.name for s in layer_specs(1024)] == T_1024
    assert [s.name for s in layer_specs(1024, channel_base=65536, channel_max=1024)] == R_1024


@pytest.mark.parametrize(
    ("config", "published", "millions"),
    [
        ({}, T_1024, 22.3),
        (
            {
                "channel_base": 65536,
                "channel_max": 1024,
                "conv_kernel": 1,
                "use_radial_filters": True,
            },
            R_1024,
            15.1,
        ),
    ],
)
def test_built_1024_generators(config: dict, published: list[str], millions: float) -> None:
    """Built modules carry the published names; totals match the paper's rounded counts."""
    gen = Generator(512, 0, 512, 1024, 3, mapping_kwargs={"num_layers": 2}, **config)
    assert gen.synthesis.layer_names == published
    assert round(sum(p.numel() for p in gen.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize("res", [256, 512])
def test_layer_names_follow_schedule(res: int) -> None:
    assert [s.name for s in layer_specs(res)] == expected_names(res, 32768, 512)


def test_input_band_at_1024() -> None:
    first = layer_specs(1024)[0]
    assert (first.cutoff, first.sampling_rate, first.size) == (2, 16, 36)


def test_l0_parameter_count_t_1024() -> None:
    specs = layer_specs(1024)
    layer = SynthesisLayer(512, False, False, specs[0], specs[0], conv_kernel=3)
    total = sum(p.numel() for p in layer.parameters())
    affine = sum(p.numel() for p in layer.affine.parameters())
    assert total == 2_622_464
    assert total - affine == 2_359_808


def test_generator_forward_names_and_determinism(generator: Generator) -> None:
    assert generator.num_ws == 16
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = generator(z, None)
        again = small_generator().eval()(z, None)
    assert img.shape == (2, 3, 32, 32)
    assert torch.isfinite(img).all()
    torch.testing.assert_close(img, again, rtol=0, atol=0)

    keys = set(generator.state_dict())
    names = generator.synthesis.layer_names
    assert names[0] == "L0_36_64" and names[-1] == "L14_32_3"
    expected = {
        "mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight", "mapping.fc1.bias",
        "mapping.w_avg", "synthesis.input.weight", "synthesis.input.affine.weight",
        "synthesis.input.affine.bias", "synthesis.input.transform", "synthesis.input.freqs",
        "synthesis.input.phases",
    }  # fmt: skip
    for name in names:
        expected |= {f"synthesis.{name}.{k}" for k in ("weight", "bias", "magnitude_ema")}
        expected |= {f"synthesis.{name}.affine.{k}" for k in ("weight", "bias")}
        layer = getattr(generator.synthesis, name)
        expected |= {
            f"synthesis.{name}.{f}"
            for f in ("up_filter", "down_filter")
            if getattr(layer, f) is not None
        }
    assert keys == expected
    assert "synthesis.L14_32_3.up_filter" not in keys  # ToRGB filters nothing


@pytest.mark.parametrize("radial", [False, True])
def test_every_layer_outputs_its_scheduled_size(radial: bool) -> None:
    gen = small_generator(conv_kernel=1 if radial else 3, use_radial_filters=radial)
    sizes = {}
    for name in gen.synthesis.layer_names:
        layer = getattr(gen.synthesis, name)
        layer.register_forward_hook(lambda _m, _i, out, name=name: sizes.update({name: out.shape}))
    with torch.no_grad():
        gen(torch.randn(1, 32), None)
    for name in gen.synthesis.layer_names:
        _, size, channels = name[1:].split("_")
        assert sizes[name] == (1, int(channels), int(size), int(size)), name


def test_truncation_psi_zero_gives_w_avg() -> None:
    z = torch.randn(4, 32)
    mapping = small_generator().mapping
    mapping(z, None, update_emas=True)
    assert mapping.w_avg.abs().sum() > 0
    ws = mapping(torch.randn(3, 32), None, truncation_psi=0)
    torch.testing.assert_close(ws, mapping.w_avg.expand(3, 16, -1))
    ws = mapping(torch.randn(3, 32), None, truncation_psi=0, truncation_cutoff=8)
    torch.testing.assert_close(ws[:, :8], mapping.w_avg.expand(3, 8, -1))
    assert not torch.allclose(ws[:, 8:], mapping.w_avg.expand(3, 8, -1))


def test_magnitude_ema_updates_only_on_request() -> None:
    gen = small_generator()
    z = torch.randn(2, 32)
    with torch.no_grad():
        gen(z, None)
        assert gen.synthesis.L0_36_64.magnitude_ema == 1
        gen(z, None, update_emas=True)
    assert gen.synthesis.L0_36_64.magnitude_ema != 1


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    return float(10 * torch.log10(peak**2 / (a - b).square().mean()))


def test_translation_equivariance(generator: Generator) -> None:
    """Translating the input's transform by k output pixels shifts the image by k pixels.

    The bound is measured, not assumed: on untrained nets like this one the overlapping regions
    agree to 59-74 dB for 1-3 pixel shifts at 32 and 64 px (peak = the reference's range; this
    case: ~63 dB), while comparing them without the shift gives only ~30 dB (the untrained image
    is smooth). 45 dB, and 15 dB above the unshifted comparison, leave margin on both sides.
    """
    res, shift = generator.img_resolution, 2
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    transform = generator.synthesis.input.transform
    with torch.no_grad():
        ref = generator(z, None)
        peak = float(ref.max() - ref.min())
        for axis in (0, 1):
            transform.copy_(torch.eye(3))
            transform[axis, 2] = -shift / res  # the transform is the inverse: move right/down
            out = generator(z, None)
            dim = 3 - axis
            moved = out.narrow(dim, shift, res - shift)
            original = ref.narrow(dim, 0, res - shift)
            unshifted = psnr(
                out.narrow(dim, shift, res - shift), ref.narrow(dim, shift, res - shift), peak
            )
            equivariant = psnr(moved, original, peak)
            print(
                f"axis {axis}: PSNR {equivariant:.1f} dB (unshifted comparison {unshifted:.1f} dB)"
            )
            assert equivariant > 45
            assert equivariant > unshifted + 15
    transform.copy_(torch.eye(3))


def test_config_r_uses_radial_filters_in_non_critical_layers() -> None:
    gen = small_generator(conv_kernel=1, use_radial_filters=True)
    for name in gen.synthesis.layer_names:
        layer = getattr(gen.synthesis, name)
        assert layer.weight.shape[2:] == (1, 1)
        if layer.down_filter is not None:
            assert layer.down_filter.ndim == (1 if layer.is_critically_sampled else 2)
            torch.testing.assert_close(layer.down_filter.sum(), torch.tensor(1.0))
    with torch.no_grad():
        img = gen(torch.randn(1, 32), None)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()


def test_conditional_generator_and_discriminator() -> None:
    torch.manual_seed(0)
    gen = Generator(32, 5, 32, 32, 3, **SMALL)
    c = torch.nn.functional.one_hot(torch.tensor([0, 3]), 5).float()
    assert {"mapping.embed.weight", "mapping.embed.bias"} <= set(gen.state_dict())
    assert gen.mapping(torch.randn(2, 32), c).shape == (2, 16, 32)
    disc = Discriminator(5, 32, 3, **SMALL)
    assert disc(torch.randn(2, 3, 32, 32), c).shape == (2, 1)


def test_discriminator_names_shape_and_r1_double_backward() -> None:
    torch.manual_seed(0)
    disc = Discriminator(0, 32, 3, **SMALL)
    keys = set(disc.state_dict())
    for res in (32, 16, 8):
        assert {f"b{res}.conv0.weight", f"b{res}.conv1.bias", f"b{res}.skip.weight"} <= keys
        assert f"b{res}.resample_filter" in keys and f"b{res}.skip.bias" not in keys
    assert {"b32.fromrgb.weight", "b32.fromrgb.bias"} <= keys and "b16.fromrgb.weight" not in keys
    assert {"b4.conv.weight", "b4.fc.weight", "b4.out.weight", "b4.out.bias"} <= keys
    assert disc.b4.out.weight.shape == (1, 64)
    # Official numbering: b32 fromrgb 0, conv0 1, conv1 2, skip 3; b16 conv0 4, conv1 5, ...
    frozen = Discriminator(0, 32, 3, block_kwargs={"freeze_layers": 5}, **SMALL)
    trainable = {n.rsplit(".", 1)[0] for n, p in frozen.named_parameters() if p.requires_grad}
    assert not {"b32.fromrgb", "b32.conv0", "b32.conv1", "b32.skip", "b16.conv0"} & trainable
    assert {"b16.conv1", "b16.skip", "b8.conv0", "b4.fc"} <= trainable

    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    scores = disc(img, None)
    assert scores.shape == (4, 1)
    (grad,) = torch.autograd.grad(scores.sum(), img, create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]).mean()
    penalty.backward()
    for name, param in disc.named_parameters():
        if name == "b4.out.bias":  # the input gradient does not depend on the final bias
            continue
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert disc.b32.conv0.weight.grad.abs().sum() > 0
