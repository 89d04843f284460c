"""The cyclegan stage end to end on toy faces, and translating a folder with what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.common.export import export_generator, load_any_generator
from src.common.generators import load_generator
from src.cyclegan.resnet import ResnetGenerator
from src.cyclegan.translate import load_translator
from tests.conftest import run_module

pytestmark = pytest.mark.slow


def test_stage_writes_both_generators_grids_and_reference_files(trained_stage: Path) -> None:
    done = json.loads((trained_stage / "done.json").read_text())
    for name in (
        "generator.pt",
        "generator_AtoB.pt",
        "generator_BtoA.pt",
        "grid.png",
        "latest_net_G_A.pth",
        "checkpoints/last.ckpt",
    ):
        assert name in done["outputs"]
        assert (trained_stage / name).is_file()
    bundle = load_generator(trained_stage / "generator_BtoA.pt")
    assert isinstance(bundle.module, ResnetGenerator)
    assert (bundle.family, bundle.image_size, bundle.meta["direction"]) == ("cyclegan", 32, "BtoA")
    with Image.open(trained_stage / "grid.png") as grid:
        # 2 rows of A | A->B | A->B->A | B | B->A | B->A->B, 32 px cells, 2 px padding.
        assert grid.size == (6 * 34 + 2, 2 * 34 + 2)
    assert sorted(p.name.rsplit("_", 1)[0] for p in (trained_stage / "grids").glob("*.png"))[
        :2
    ] == ["A_to_B_to_A", "A_to_B_to_A"]


def test_every_checkpoint_kind_gives_the_same_generator(trained_stage: Path) -> None:
    reference_options = {"netG": "resnet_1blocks", "ngf": 4}
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    outputs = []
    for ckpt in (
        trained_stage,
        trained_stage / "generator_BtoA.pt",
        trained_stage / "checkpoints" / "last.ckpt",
        trained_stage / "latest_net_G_B.pth",
    ):
        generator, _ = load_translator(ckpt, "BtoA", reference_options)
        with torch.no_grad():
            outputs.append(generator.eval()(images))
    assert all(torch.equal(out, outputs[0]) for out in outputs[1:])


def test_translate_command_writes_each_image_once(trained_stage: Path, tmp_path: Path) -> None:
    photos = trained_stage.parent.parent.parent / "toy" / "testA"
    args = [f"ckpt={trained_stage}", f"input={photos}", f"output={tmp_path}", "direction=AtoB"]
    done = run_module("src.cyclegan.translate", *args, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "loaded 2 images" in done.stdout
    written = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in written] == sorted(f"{p.stem}.png" for p in photos.glob("*.png"))
    with Image.open(written[0]) as picture:
        assert picture.size == (32, 32)
    wrong = run_module(
        "src.cyclegan.translate",
        f"ckpt={trained_stage / 'generator.pt'}",
        f"input={photos}",
        f"output={tmp_path}",
        "direction=BtoA",
    )
    assert wrong.returncode == 2
    assert "translates AtoB, not BtoA" in wrong.stderr


def test_exported_generator_goes_to_onnx_with_the_shared_export(
    trained_stage: Path, tmp_path: Path
) -> None:
    loaded = load_any_generator(trained_stage / "generator_AtoB.pt")
    assert loaded.label.startswith("CycleGAN ResNet generator") and loaded.image_size == 32
    report = export_generator(loaded, tmp_path / "g.onnx", "onnx")
    assert report is not None and report.passed and report.onnx_vs_torch <= 1e-4
