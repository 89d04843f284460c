"""The shared export (src.common.export): every generator family from every file a user holds,
the float64 parity check at release sizes, and nothing left behind by a failed export."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import src.common.export as export
from src.common.checkpoint import CheckpointMismatchError
from src.common.errors import UserError
from src.common.export import (
    check_images,
    export_checked_onnx,
    export_generator,
    load_any_generator,
)
from src.cyclegan.networks import build_generator as build_cyclegan
from src.photo2cartoon.interop import load_reference_checkpoint
from src.photo2cartoon.networks import Generator
from src.pix2pix.networks import build_generator as build_pix2pix
from src.pix2pix.networks import init_weights
from tests.conftest import run_module
from tests.cyclegan.reference_layout import FlatResnetGenerator
from tests.photo2cartoon.test_interop import _reference_networks, _save_release
from tests.pix2pix.reference_layout import NestedUnet


@pytest.fixture(autouse=True)
def two_threads() -> None:
    torch.set_num_threads(2)


def reference_unet_128(path: Path) -> torch.nn.Module:
    """A unet_128 (batch norm, ngf 4) saved as the reference does: its state dict, plainly."""
    torch.manual_seed(0)
    net = NestedUnet(num_downs=7, ngf=4)
    with torch.no_grad():
        net.train()(torch.rand(2, 3, 128, 128) * 2 - 1)
    torch.save(net.state_dict(), path)
    return net.eval()


def reference_resnet(path: Path, **options: object) -> torch.nn.Module:
    """A small reference-layout ResNet generator saved as the reference does."""
    torch.manual_seed(0)
    net = init_weights(FlatResnetGenerator(ngf=4, n_blocks=2, **options))
    if options.get("norm") == "batch":
        with torch.no_grad():
            net.train()(torch.rand(2, 3, 32, 32) * 2 - 1)
    torch.save(net.state_dict(), path)
    return net.eval()


def onnx_output(path: Path, images: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["output"], {"input": images.numpy()})
    return torch.from_numpy(out)


def test_unet_reference_file_loads_with_its_size_and_settings(tmp_path: Path) -> None:
    reference = reference_unet_128(tmp_path / "latest_net_G.pth")
    loaded = load_any_generator(tmp_path / "latest_net_G.pth")
    assert (loaded.family, loaded.image_size, loaded.fixed_size) == ("pix2pix", 128, 128)
    assert loaded.config["netG"] == "unet_128" and loaded.config["ngf"] == 4
    assert loaded.config["norm"] == "batch"
    assert loaded.label == "pix2pix U-Net generator unet_128"
    images = check_images(128, 2)
    with torch.no_grad():
        assert torch.allclose(loaded.module(images), reference(images), atol=1e-6)
    with pytest.raises(UserError, match="takes a multiple of 128"):
        export_generator(loaded, tmp_path / "g.onnx", "onnx", size=96)


@pytest.mark.parametrize(
    ("norm", "padding", "dropout"),
    [("instance", "reflect", False), ("batch", "zero", True), ("none", "reflect", False)],
)
def test_resnet_reference_file_loads_with_its_settings(
    tmp_path: Path, norm: str, padding: str, dropout: bool
) -> None:
    path = tmp_path / "latest_net_G_A.pth"
    reference = reference_resnet(path, norm=norm, padding=padding, dropout=dropout)
    loaded = load_any_generator(path)
    assert loaded.family == "cyclegan" and loaded.fixed_size is None
    assert loaded.image_size == 256
    assert loaded.label == "CycleGAN ResNet generator resnet_2blocks"
    assert {k: loaded.config[k] for k in ("ngf", "norm", "padding", "use_dropout")} == {
        "ngf": 4,
        "norm": norm,
        "padding": padding,
        "use_dropout": dropout,
    }
    images = check_images(32, 2)
    with torch.no_grad():
        assert torch.allclose(loaded.module(images), reference(images), atol=1e-6)


def test_misfits_name_the_family(tmp_path: Path) -> None:
    reference_resnet(tmp_path / "g.pth", norm="instance")
    with pytest.raises(
        CheckpointMismatchError, match="does not fit the configured CycleGAN ResNet"
    ):
        load_any_generator(tmp_path / "g.pth", {"netG": "resnet_3blocks"})
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is none of"):
        load_any_generator(tmp_path / "other.pt")


def test_ugatit_release_loads_either_direction_at_its_size(tmp_path: Path) -> None:
    """A six-network file as U-GAT-IT's trainer saves it (reference-layout modules): either
    generator, as the interop loader reads it."""
    path = _save_release(_reference_networks("ugatit"), tmp_path / "release.pt", "zip", False)
    release = load_reference_checkpoint(path)
    images = check_images(32, 2)
    for direction, name in (("AtoB", "genA2B"), ("BtoA", "genB2A")):
        loaded = load_any_generator(path, direction=direction)
        assert loaded.label == "U-GAT-IT generator (light)"  # light: any size runs
        with torch.no_grad():
            assert torch.equal(loaded.module(images), release[name].eval()(images))
    with pytest.raises(UserError, match="direction"):
        load_any_generator(path, direction="sideways")


@pytest.mark.slow
def test_a_broken_graph_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    net = init_weights(build_pix2pix({"netG": "unet_32", "ngf": 4, "norm": "instance"})).eval()
    broken = copy.deepcopy(net)
    with torch.no_grad():
        broken.up[0].conv.bias.add_(1e-2)  # a graph off by a little (1e-2) everywhere
    real_export = export.export_onnx
    monkeypatch.setattr(
        export,
        "export_onnx",
        lambda model, example, path, opset: real_export(broken, example, path),
    )
    with pytest.raises(UserError) as caught:
        export_checked_onnx(net, tmp_path / "g.onnx", 32, label="pix2pix U-Net generator unet_32")
    message = str(caught.value)
    assert message.startswith("pix2pix U-Net generator unet_32: the ONNX graph is not")
    assert "ONNX Runtime" in message and "float32 PyTorch" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_command_takes_reference_files_without_flags(tmp_path: Path) -> None:
    unet = reference_unet_128(tmp_path / "latest_net_G.pth")
    resnet = reference_resnet(tmp_path / "latest_net_G_A.pth", norm="instance")
    env = {"OMP_NUM_THREADS": "2"}
    for module, name, reference, side in (
        ("src.common.export", "latest_net_G.pth", unet, 128),
        ("src.pix2pix.export", "latest_net_G_A.pth", resnet, 256),
    ):
        out = tmp_path / f"{name}.onnx"
        done = run_module(module, f"ckpt={tmp_path / name}", f"out={out}", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"at {side} px as onnx" in done.stdout and "float64" in done.stdout
        images = check_images(side, 2)
        with torch.no_grad():
            expected = reference(images)
        assert np.allclose(onnx_output(out, images), expected, atol=1e-4)


def release_generator(family: str) -> torch.nn.Module:
    """A release-size generator: seeded weights, batch-norm statistics from a few batches."""
    torch.manual_seed(0)
    if family == "unet_256":
        net = init_weights(build_pix2pix({"netG": "unet_256"}))
        with torch.no_grad():
            net.train()(torch.rand(2, 3, 256, 256) * 2 - 1)
        return net.eval()
    if family == "resnet_9blocks":
        return init_weights(build_cyclegan({"netG": "resnet_9blocks"})).eval()
    ngf = 32 if family == "photo2cartoon" else 64
    return Generator(family, ngf=ngf, img_size=256, light=True, n_res=4).eval()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["photo2cartoon", "ugatit", "unet_256"])
def test_release_size_exports_pass_and_match_pytorch(tmp_path: Path, family: str) -> None:
    # photo2cartoon at 256 px, light: ~2,000 ops, about 20 s on 2 CPU cores.
    net = release_generator(family)
    report = export_checked_onnx(net, tmp_path / "g.onnx", 256, label=family, images=2)
    assert report.passed and report.onnx_error > 0
    assert report.onnx_vs_torch < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]


def test_unet_misfits_name_the_unet(tmp_path: Path) -> None:
    reference_unet_128(tmp_path / "latest_net_G.pth")
    with pytest.raises(CheckpointMismatchError, match=r"U-Net generator unet_256 \(pix2pix / Cy"):
        load_any_generator(tmp_path / "latest_net_G.pth", {"netG": "unet_256"})
