"""StyleGAN2 family: the official networks' sizes and names, their ops, and official pickles of
both releases loading exactly through the restricted unpickler."""

from __future__ import annotations

import copy
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from src.common.errors import UserError
from src.common.stage import CONFIG_DIR
from src.stylegan3.convert import main as convert_main
from src.stylegan3.generate import generate, to_pil
from src.stylegan3.legacy import (
    UnsafePickleError,
    build_network,
    load_networks,
    load_official_pickle,
    network_family,
)
from src.stylegan3.networks import Discriminator, stylegan2
from src.stylegan3.ops import setup_filter, upfirdn2d
from src.stylegan3.stylegan2 import Generator, _resampled_conv, modulated_conv2d
from tests.stylegan3.official import (
    AUGMENT_KWARGS,
    TRAINING_SET_KWARGS,
    OfficialModules,
    hostile_source,
    official_modules,
    snapshot,
    write_pickle,
)
from tests.stylegan3.test_legacy import Reduce
from tests.stylegan3.tiny import D_KWARGS, SG2_G_KWARGS

# StyleGAN2-ADA's own pickles (converted from the TF release) record every option nested.
ADA_G_KWARGS = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {
        "num_layers": 3,
        "embed_features": None,
        "layer_features": None,
        "activation": "lrelu",
        "lr_multiplier": 0.01,
        "w_avg_beta": 0.995,
    },
    "synthesis_kwargs": {
        "channel_base": 128,
        "channel_max": 32,
        "num_fp16_res": 0,
        "conv_clamp": None,
        "architecture": "skip",
        "resample_filter": [1, 3, 3, 1],
        "use_noise": True,
        "activation": "lrelu",
    },
}
ADA_D_KWARGS = {
    "c_dim": 0,
    "img_resolution": 16,
    "img_channels": 3,
    "architecture": "resnet",
    "channel_base": 128,
    "channel_max": 32,
    "num_fp16_res": 0,
    "conv_clamp": None,
    "cmap_dim": None,
    "block_kwargs": {"activation": "lrelu", "resample_filter": [1, 3, 3, 1], "freeze_layers": 0},
    "mapping_kwargs": {
        "num_layers": 0,
        "embed_features": None,
        "layer_features": None,
        "activation": "lrelu",
        "lr_multiplier": 0.1,
    },
    "epilogue_kwargs": {
        "mbstd_group_size": None,
        "mbstd_num_channels": 1,
        "activation": "lrelu",
    },
}
SG2_D_KWARGS = {**D_KWARGS, "img_resolution": 16}


def official_block_keys(res: int, first: bool, torgb: bool, skip: bool) -> set[str]:
    """State-dict keys of one official SynthesisBlock, written out from the release's layout."""
    prefix = f"synthesis.b{res}."
    keys = {prefix + "resample_filter"}
    layer = ["weight", "bias", "noise_strength", "noise_const", "resample_filter"]
    layer += ["affine.weight", "affine.bias"]
    convs = ["conv1"] if first else ["conv0", "conv1"]
    keys |= {f"{prefix}{conv}.{name}" for conv in convs for name in layer}
    if first:
        keys.add(prefix + "const")
    if torgb:
        keys |= {prefix + f"torgb.{n}" for n in ("weight", "bias", "affine.weight", "affine.bias")}
    if skip:
        keys |= {prefix + "skip.weight", prefix + "skip.resample_filter"}
    return keys


@pytest.mark.parametrize(
    ("resolution", "mapping", "base", "g_params", "d_params", "num_ws"),
    [(1024, 8, 32768, 30_370_060, 29_012_513, 18), (256, 2, 16384, 23_191_522, 24_001_089, 14)],
)
def test_official_sizes_and_names(
    resolution: int, mapping: int, base: int, g_params: int, d_params: int, num_ws: int
) -> None:
    """Config F at 1024 and the StyleGAN3 repository's stylegan2 cfg at 256, as counted on the
    official code."""
    g = Generator(
        512, 0, 512, resolution, 3, mapping_kwargs={"num_layers": mapping}, channel_base=base
    )
    d = Discriminator(0, resolution, 3, channel_base=base)
    assert sum(p.numel() for p in g.parameters()) == g_params
    assert sum(p.numel() for p in d.parameters()) == d_params
    assert g.num_ws == g.mapping.num_ws == num_ws
    expected = {f"mapping.fc{i}.{n}" for i in range(mapping) for n in ("weight", "bias")}
    expected.add("mapping.w_avg")
    for res in [2**i for i in range(2, resolution.bit_length())]:
        expected |= official_block_keys(res, res == 4, True, False)
    assert set(g.state_dict()) == expected
    assert g.synthesis.b8.conv0.noise_const.shape == (8, 8)
    assert g.synthesis.b4.const.shape == (512, 4, 4)


def test_architectures_orig_and_resnet() -> None:
    for architecture, torgb_blocks, skip in (("orig", {16}, False), ("resnet", {16}, True)):
        g = Generator(**{**SG2_G_KWARGS, "architecture": architecture}).eval()
        expected = {f"mapping.fc{i}.{n}" for i in range(2) for n in ("weight", "bias")}
        expected.add("mapping.w_avg")
        for res in (4, 8, 16):
            expected |= official_block_keys(res, res == 4, res in torgb_blocks, skip and res > 4)
        assert set(g.state_dict()) == expected
        image = g(torch.randn(2, 16), None, noise_mode="const")
        assert image.shape == (2, 3, 16, 16) and torch.isfinite(image).all()


def test_upsampling_conv_equals_the_release_generic_path() -> None:
    """The transposed-conv path equals the release's generic reference: zero-stuff, pad
    [3, 2], FIR with gain 4, then a true convolution (flipped weights)."""
    torch.manual_seed(0)
    x, weight = torch.randn(2, 5, 6, 6), torch.randn(4, 5, 3, 3)
    f = setup_filter([1, 3, 3, 1])
    fast = _resampled_conv(x, weight, up=2, padding=1, groups=1, resample_filter=f)
    reference = F.conv2d(upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), weight.flip([2, 3]))
    assert fast.shape == (2, 4, 12, 12)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_fused_and_unfused_modulated_conv_agree() -> None:
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    noise, f = torch.randn(3, 1, 12, 12), setup_filter([1, 3, 3, 1])
    for up in (1, 2):
        kwargs = {
            "up": up,
            "padding": 1,
            "resample_filter": f,
            "noise": noise[..., : 6 * up, : 6 * up],
        }
        fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
        split = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
        torch.testing.assert_close(fused, split, rtol=1e-5, atol=1e-5)
    # Demodulated outputs have unit variance per output channel for unit-variance input.
    out = modulated_conv2d(torch.randn(64, 5, 1, 1), weight[..., 1:2, 1:2], torch.rand(64, 5) + 0.5)
    assert abs(float(out.square().mean()) - 1) < 0.3


def test_noise_modes_and_truncation_cutoff() -> None:
    torch.manual_seed(0)
    g = Generator(**SG2_G_KWARGS).eval()
    with torch.no_grad():
        for name, param in g.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)
        g.mapping.w_avg.normal_()
        z = torch.randn(2, 16)
        const = g(z, None, noise_mode="const")
        assert torch.equal(const, g(z, None, noise_mode="const"))
        assert not torch.allclose(const, g(z, None, noise_mode="none"))
        assert not torch.allclose(g(z, None, noise_mode="random"), g(z, None, noise_mode="random"))
        with pytest.raises(ValueError, match="noise_mode"):
            g(z, None, noise_mode="fixed")
        full = g.mapping(z, None)
        cut = g.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], g.mapping.w_avg.lerp(full[:, :2], 0.5))
    assert torch.equal(cut[:, 2:], full[:, 2:])


def test_family_is_read_from_the_keys() -> None:
    keys = Generator(**SG2_G_KWARGS).state_dict()
    assert network_family("G_ema", "Generator", keys, "x.pkl") == "stylegan2"
    assert network_family("G", "Generator", ["synthesis.input.freqs"], "x.pkl") == "stylegan3"


# ----------------------------------------------------------------- official pickles


def release_networks(
    g_kwargs: dict, d_kwargs: dict
) -> tuple[stylegan2.Generator, stylegan2.Generator, Discriminator]:
    """G, G_ema and D of ours with noise strengths and ``w_avg`` moved off their zero init."""
    torch.manual_seed(0)
    g, d = Generator(**g_kwargs), Discriminator(**d_kwargs)
    g_ema = copy.deepcopy(g)
    with torch.no_grad():
        for net in (g, g_ema):
            for name, param in net.named_parameters():
                if name.endswith("noise_strength"):
                    param.normal_()
        g_ema.mapping.w_avg.normal_()
    return g.eval(), g_ema.eval(), d.eval()


def write_release_pickle(
    path: Path,
    stubs: OfficialModules,
    g_kwargs: dict,
    d_kwargs: dict,
    module_src: str | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """A ``network-snapshot`` pickle of :func:`release_networks` in NVIDIA's format."""
    g, g_ema, d = release_networks(g_kwargs, d_kwargs)
    networks = {"G": (g, g_kwargs), "D": (d, d_kwargs), "G_ema": (g_ema, g_kwargs)}
    write_pickle(path, snapshot(stubs, networks, module_src))
    stubs.remove()
    return g, g_ema, d


def outputs(g: nn.Module, g_ema: nn.Module, d: nn.Module) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(1)
    z = torch.randn([4, 16], generator=rng)
    images = torch.randn([4, 3, 16, 16], generator=rng)
    with torch.no_grad():
        return [
            g(z, None, noise_mode="const"),
            g_ema(z, None, truncation_psi=0.7, noise_mode="const"),
            d(images, None),
        ]


@pytest.mark.parametrize(
    ("g_kwargs", "d_kwargs"),
    [(SG2_G_KWARGS, SG2_D_KWARGS), (ADA_G_KWARGS, ADA_D_KWARGS)],
    ids=["stylegan3-repo", "stylegan2-ada"],
)
def test_release_pickles_load_exactly_and_run_no_code(
    tmp_path: Path, official_stubs: OfficialModules, g_kwargs: dict, d_kwargs: dict
) -> None:
    path, marker = tmp_path / "network-snapshot.pkl", tmp_path / "marker.txt"
    hostile = hostile_source(marker, *release_networks(g_kwargs, d_kwargs))
    ours = write_release_pickle(path, official_stubs, g_kwargs, d_kwargs, hostile)

    loaded = load_official_pickle(path)

    assert not marker.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert isinstance(loaded["G"], stylegan2.Generator)
    assert isinstance(loaded["G_ema"], stylegan2.Generator)
    got = outputs(loaded["G"].eval(), loaded["G_ema"].eval(), loaded["D"].eval())
    for ref, out in zip(outputs(*ours), got, strict=True):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert loaded["configs"]["G"] == g_kwargs
    assert loaded["training_set_kwargs"] == TRAINING_SET_KWARGS
    assert loaded["augment_pipe"] == AUGMENT_KWARGS
    with official_modules(tmp_path / "again"):  # control: NVIDIA's loader would run it
        pickle.loads(path.read_bytes())
    assert marker.read_text() == "module_src ran"


def test_release_pickle_converts_and_reloads(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    official, ckpt = tmp_path / "net.pkl", tmp_path / "net.pt"
    ours = write_release_pickle(official, official_stubs, SG2_G_KWARGS, SG2_D_KWARGS)
    convert_main([f"in={official}", f"out={ckpt}"])
    assert zipfile.is_zipfile(ckpt)
    loaded = load_networks(ckpt)
    assert isinstance(loaded["G_ema"], stylegan2.Generator)
    got = outputs(loaded["G"].eval(), loaded["G_ema"].eval(), loaded["D"].eval())
    for ref, out in zip(outputs(*ours), got, strict=True):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_hostile_stylegan2_pickle_is_refused(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    path, marker = tmp_path / "evil.pkl", tmp_path / "marker.txt"
    write_release_pickle(path, official_stubs, SG2_G_KWARGS, SG2_D_KWARGS)
    data = path.read_bytes()
    path.write_bytes(pickle.dumps({"G": Reduce(eval, f"open({str(marker)!r}, 'w')")}) + data)
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        load_official_pickle(path)
    assert not marker.exists()


def test_unknown_stylegan2_option_is_named(tmp_path: Path, official_stubs: OfficialModules) -> None:
    path = tmp_path / "net.pkl"
    write_release_pickle(path, official_stubs, ADA_G_KWARGS, ADA_D_KWARGS)
    raw = path.read_bytes().replace(b"use_noise", b"use_xoise")
    path.write_bytes(raw)
    with pytest.raises(UserError, match="does not implement: use_xoise"):
        load_official_pickle(path)


def test_generate_draws_a_seed_as_nvidia_tools_with_const_noise(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    path = tmp_path / "stylegan2.pkl"
    _, g_ema, _ = write_release_pickle(path, official_stubs, SG2_G_KWARGS, SG2_D_KWARGS)
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "stylegan3"), version_base="1.3"):
        cfg = compose("generate", [f"ckpt={path}", f"outdir={tmp_path / 'out'}", "seeds=[7,3]"])
    cfg.psi = 0.7
    outdir = generate(cfg)
    z = torch.from_numpy(np.random.RandomState(3).randn(1, 16)).float()
    with torch.no_grad():
        expected = to_pil(g_ema(z, None, truncation_psi=0.7, noise_mode="const"))[0]
    assert np.array_equal(np.asarray(Image.open(outdir / "seed0003.png")), np.asarray(expected))
    cfg.translate = [1, 0]
    with pytest.raises(UserError, match="translate/rotate need a StyleGAN3 generator"):
        generate(cfg)
    cfg.translate, cfg.noise_mode = [0, 0], "fixed"
    with pytest.raises(UserError, match="noise_mode: 'fixed'; use one of random, const, none"):
        generate(cfg)


def test_sizes_nested_under_synthesis_kwargs_are_checked() -> None:
    """StyleGAN2-ADA records sizes under synthesis_kwargs; a damaged one is refused before
    anything is allocated, as the flat ones are."""
    synthesis = {**ADA_G_KWARGS["synthesis_kwargs"], "channel_max": 1 << 30}
    with pytest.raises(UserError, match=r"synthesis_kwargs.channel_max=1073741824, not a whole"):
        build_network("G", {**ADA_G_KWARGS, "synthesis_kwargs": synthesis}, "stylegan2")
