"""``python -m src.encoder``: a tiny encoder learns to invert a tiny generator's pictures (held-out
reconstructions clearly better than the latent average), resumes exactly, and the progressive
schedule and losses behave as e4e's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.common.images import save_image
from src.encoder.checkpoints import load_encoder
from src.encoder.losses import LatentDiscriminator, delta_norm, r1_penalty
from src.encoder.module import progressive_stage
from src.stylegan3.generate import to_pil
from src.stylegan3.legacy import load_networks
from tests.conftest import run_module
from tests.stylegan3.tiny import write_tiny_checkpoint

TINY = [
    "encoder.backbone.widths=[16,32,48,64]",
    "encoder.backbone.units=[1,1,1,1]",
    "encoder.input_size=32",
    "encoder.batch_size=8",
    "encoder.num_workers=0",
    "encoder.lr=2e-3",
    "encoder.progressive_start=null",
    "encoder.val_count=8",
    "+trainer.enable_progress_bar=false",
    "callbacks=minimal",
    "logger=csv",
]


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny generator and pictures it made (so a perfect inversion exists)."""
    root = tmp_path_factory.mktemp("encoder_stage")
    generator_path = write_tiny_checkpoint(root / "G.pt", seed=0)
    generator = load_networks(generator_path)["G_ema"].eval()
    z = torch.randn(40, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pictures = to_pil(generator(z, None))
    for index, picture in enumerate(pictures):
        folder = root / ("val" if index >= 32 else "train")
        save_image(picture, folder / f"{index:03d}.png")
    return {"root": root, "generator": generator_path}


def run_encoder_stage(faces: dict[str, Path], tmp_path: Path, *extra: str):
    return run_module(
        "src.encoder",
        f"encoder.data={faces['root'] / 'train'}",
        f"encoder.val_data={faces['root'] / 'val'}",
        f"encoder.generator={faces['generator']}",
        f"paths.root_dir={tmp_path}",
        *TINY,
        *extra,
    )


@pytest.mark.slow
def test_stage_beats_the_latent_average_and_writes_encoder(faces, tmp_path: Path) -> None:
    result = run_encoder_stage(faces, tmp_path, "encoder.steps=150", "encoder.val_every=75")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "runs" / "default" / "encoder"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["encoder"]["l2"] < 0.7 * metrics["latent_average"]["l2"], metrics
    assert metrics["encoder"]["psnr"] > metrics["latent_average"]["psnr"] + 1.0
    bundle = load_encoder(out / "encoder.pt")
    assert bundle.encoder.n_styles == 5 and bundle.encoder.kind == "e4e"
    assert (out / "reconstruction.png").is_file()


def test_progressive_schedule_adds_one_layer_every_n_steps() -> None:
    assert progressive_stage(10, None, 5, 18) is None
    assert [progressive_stage(s, 20000, 2000, 18) for s in (0, 19999, 20000, 21999, 22000)] == [
        0,
        0,
        1,
        1,
        2,
    ]
    assert progressive_stage(20000 + 2000 * 16, 20000, 2000, 18) is None


def test_delta_norm_and_r1() -> None:
    ws = torch.zeros(2, 4, 3)
    ws[:, 2] = torch.tensor([3.0, 4.0, 0.0])
    assert float(delta_norm(ws, 4)) == pytest.approx(5.0)
    assert float(delta_norm(ws, 2)) == 0.0
    disc = LatentDiscriminator(3)
    real = torch.randn(5, 3, requires_grad=True)
    assert float(r1_penalty(real, disc(real)).detach()) > 0


def test_shared_lpips_and_identity_plug_into_the_losses() -> None:
    """The latent tools' LPIPS and face-identity modules, as the config's Hydra targets."""
    from hydra.utils import instantiate

    from src.encoder.module import EncoderTraining
    from src.encoder.networks import build_encoder
    from src.stylegan3.networks import Generator
    from tests.stylegan3.tiny import G_KWARGS

    torch.manual_seed(0)
    generator = Generator(**G_KWARGS)
    encoder = build_encoder(
        {
            "kind": "e4e",
            "n_styles": generator.num_ws,
            "w_dim": 16,
            "input_size": 32,
            "widths": (16, 32, 48, 64),
            "units": (1, 1, 1, 1),
        }
    )
    lpips = instantiate(
        {
            "_target_": "src.latent.perceptual.load_perceptual",
            "backbone": "torchvision",
            "vgg16": "random",
        }
    )
    identity = instantiate(
        {
            "_target_": "src.common.faceid.load_identity_encoder",
            "kind": "mobilefacenet",
            "weights": "random",
            "key": "id",
        }
    )
    module = EncoderTraining(
        encoder,
        generator,
        weights={"l2": 1, "lpips": 0.8, "id": 0.5},
        lpips=lpips,
        identity=identity,
    )
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    fake = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    total, parts = module.reconstruction_loss(fake, real)
    assert set(parts) == {"l2", "lpips", "id"}
    expected = parts["l2"] + 0.8 * parts["lpips"] + 0.5 * parts["id"]
    assert torch.allclose(total, expected)
    total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    _, same = module.reconstruction_loss(real, real)
    assert float(same["id"]) == pytest.approx(0.0, abs=1e-5)
