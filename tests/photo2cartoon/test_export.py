"""Export: generator.pt through the shared loader, and ONNX Runtime parity of one-output graphs."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from src.common.export import export_onnx, onnx_max_abs_diff
from src.common.generators import load_generator, save_generator
from src.photo2cartoon.networks import Generator

CONFIG = {"ngf": 4, "img_size": 32, "light": True, "n_res": 1}


def test_generator_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = {"kind": "photo2cartoon", **CONFIG}
    generator = Generator(**config).eval()
    path = save_generator(
        tmp_path / "generator.pt", generator, family="photo2cartoon", config=config, image_size=32
    )
    bundle = load_generator(path)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(bundle.module(images), generator(images))
    assert bundle.family == "photo2cartoon" and bundle.image_size == 32


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ugatit", "photo2cartoon"])
def test_onnx_export_has_one_output_and_matches_pytorch(tmp_path: Path, kind: str) -> None:
    # The hourglass variant's graph has ~2,000 ops: about 15 s to export on 2 CPU cores.
    torch.manual_seed(0)
    generator = Generator(kind, **CONFIG).eval()
    example = torch.rand(1, 3, 32, 32) * 2 - 1
    path = export_onnx(generator, example, tmp_path / "generator.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    assert onnx_max_abs_diff(generator, path, example) < 1e-4
    # The batch axis is dynamic.
    assert onnx_max_abs_diff(generator, path, torch.rand(3, 3, 32, 32) * 2 - 1) < 1e-4
