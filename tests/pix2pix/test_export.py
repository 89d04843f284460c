"""ONNX and TorchScript export of pix2pix generators: parity, dynamic batch, names, the CLI."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from src.common.errors import UserError
from src.common.export import export_onnx, export_torchscript, onnx_max_abs_diff
from src.common.generators import save_generator
from src.pix2pix.export import export_generator, load_any_generator
from src.pix2pix.interop import save_reference_generator
from src.pix2pix.networks import build_generator, init_weights
from tests.conftest import run_module

TINY = {"netG": "unet_32", "ngf": 8, "norm": "batch"}


def trained_looking(config: dict) -> torch.nn.Module:
    """A generator with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    net = init_weights(build_generator(config))
    with torch.no_grad():
        net.train()(torch.randn(4, 3, 32, 32))
    return net.eval()


@pytest.mark.slow
def test_onnx_parity_dynamic_batch_and_names(tmp_path: Path) -> None:
    net = trained_looking(TINY)
    path = export_onnx(net, torch.randn(1, 3, 32, 32), tmp_path / "g.onnx")
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param
    for batch in (1, 3):
        assert onnx_max_abs_diff(net, path, torch.rand(batch, 3, 32, 32) * 2 - 1) < 1e-4
    assert not list(tmp_path.glob(".*.tmp"))


def test_torchscript_matches_eager(tmp_path: Path) -> None:
    net = trained_looking({**TINY, "norm": "instance"})
    path = export_torchscript(net, torch.randn(1, 3, 32, 32), tmp_path / "g.ts")
    scripted = torch.jit.load(str(path))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(scripted(images), net(images), atol=1e-5)


def test_any_checkpoint_kind_loads(tmp_path: Path) -> None:
    net = trained_looking(TINY)
    save_generator(tmp_path / "generator.pt", net, family="pix2pix", config=TINY, image_size=32)
    save_reference_generator(net, tmp_path / "latest_net_G.pth")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = net(images)
        for name, options in (("generator.pt", None), ("latest_net_G.pth", TINY)):
            loaded = load_any_generator(tmp_path / name, options)
            assert torch.equal(loaded.module(images), expected)
    assert load_any_generator(tmp_path / "generator.pt").image_size == 32
    with pytest.raises(UserError, match="format"):
        export_generator(loaded, tmp_path / "x.bin", "tflite")


@pytest.mark.slow
def test_export_command(tmp_path: Path) -> None:
    net = trained_looking(TINY)
    save_generator(tmp_path / "generator.pt", net, family="pix2pix", config=TINY, image_size=32)
    result = run_module(
        "src.pix2pix.export", f"ckpt={tmp_path / 'generator.pt'}", f"out={tmp_path / 'g.onnx'}"
    )
    assert result.returncode == 0, result.stderr
    assert "against float64 PyTorch" in result.stdout and (tmp_path / "g.onnx").is_file()
    assert "pix2pix U-Net generator unet_32" in result.stdout
    missing = run_module("src.pix2pix.export", f"ckpt={tmp_path / 'nope.pt'}", "out=x.onnx")
    assert missing.returncode == 2 and "nope.pt does not exist" in missing.stderr
