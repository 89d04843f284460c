"""Toonify by inversion: ReStyle's iterations, the degree knob's endpoints (exact), its cache, and
``cartoonize backend=inversion`` on the shipped photos (one folder per degree, a sweep sheet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from src.blend.blending import blend_generators
from src.common.checkpoint import save_checkpoint
from src.common.errors import UserError
from src.common.images import save_image
from src.encoder.checkpoints import EncoderBundle, load_encoder, save_encoder
from src.encoder.inversion import DegreeBlend, Inverter, render
from src.encoder.networks import build_encoder
from src.encoder.toonify import load_inversion_runner
from src.serve.cartoonize import cartoonize_files, degree_sweep
from src.stylegan3.legacy import load_networks, to_checkpoint
from tests.encoder.reference_layout import randomized
from tests.serve.conftest import PHOTOS
from tests.stylegan3.tiny import write_tiny_checkpoint

WEIGHTS = [0.2, 0.4, 0.6, 0.8, 1.0]
ENCODER = {"w_dim": 16, "input_size": 32, "widths": (16, 32, 48, 64), "units": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base generator, its fine-tune, their blend (as the blend stage saves it) and a
    tiny e4e and ReStyle-e4e encoder for the base."""
    folder = tmp_path_factory.mktemp("toonify")
    base_path = write_tiny_checkpoint(folder / "base.pt", seed=0)
    tuned_path = write_tiny_checkpoint(folder / "tuned.pt", seed=0, tune_seed=1)
    base, tuned = load_networks(base_path), load_networks(tuned_path)
    for kind in ("G", "G_ema"):
        base[kind] = blend_generators(base[kind], tuned[kind], WEIGHTS)
    blended_path = save_checkpoint(to_checkpoint(base, "blend"), folder / "blended.pt")
    generator = load_networks(base_path)["G_ema"]
    paths = {"base": base_path, "tuned": tuned_path, "blended": blended_path}
    for seed, kind in enumerate(("e4e", "restyle_e4e")):
        torch.manual_seed(seed)
        encoder = build_encoder({"kind": kind, "n_styles": generator.num_ws, **ENCODER})
        with torch.no_grad():  # small offsets, as a trained encoder's
            for head in encoder.styles:
                head.linear.weight.mul_(0.05)
        paths[kind] = save_encoder(folder / f"{kind}.pt", encoder, generator.mapping.w_avg)
    return paths


def generator(files: dict[str, Path], name: str) -> torch.nn.Module:
    return load_networks(files[name])["G_ema"].eval()


def test_restyle_iterations_follow_the_release_procedure(files) -> None:
    """Step 0 sees the average latent's picture and adds to latent_avg, later steps see the
    last reconstruction (pooled to the encoder's size) and add to the last latents."""
    bundle = load_encoder(files["restyle_e4e"])
    base = generator(files, "base")
    inverter = Inverter(bundle, base, steps=3)
    photos = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ws = inverter(photos)
        x = F.interpolate(photos, size=(32, 32), mode="bilinear", align_corners=False)
        avg = bundle.latent_avg.unsqueeze(0)
        image = F.interpolate(base.synthesis(avg), size=(32, 32), mode="bilinear")
        latent = None
        for _ in range(3):
            codes = bundle.encoder(torch.cat([x, image.expand(2, -1, -1, -1)], dim=1))
            latent = codes + (avg.repeat(2, 1, 1) if latent is None else latent)
            image = F.interpolate(base.synthesis(latent), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(ws, latent, rtol=0, atol=0)
    with torch.no_grad():
        assert not torch.allclose(inverter(photos, steps=1), ws)


def test_e4e_adds_the_latent_average(files) -> None:
    bundle = load_encoder(files["e4e"])
    inverter = Inverter(bundle, generator(files, "base"))
    photos = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(inverter(photos), bundle.encoder(photos) + bundle.latent_avg)


def test_degree_endpoints_are_exact_and_the_middle_scales_the_blend(files) -> None:
    base, tuned, blended = (generator(files, k) for k in ("base", "tuned", "blended"))
    blend = DegreeBlend(base, blended)
    ws = base.mapping(torch.randn(3, base.z_dim, generator=torch.Generator().manual_seed(2)), None)
    with torch.no_grad():
        assert torch.equal(render(blend.at(0), ws), render(base, ws))
        assert torch.equal(render(blend.at(1), ws), render(blended, ws))
        halfway = blend_generators(base, tuned, [0.5 * w for w in WEIGHTS])
        torch.testing.assert_close(
            render(blend.at(0.5), ws), render(halfway, ws), atol=1e-5, rtol=1e-5
        )
        assert not torch.allclose(render(blend.at(0.5), ws), render(base, ws), atol=1e-3)
    assert blend.at(0.5) is blend.at(0.5)
    with pytest.raises(UserError, match=r"degree=1.5 is outside \[0, 1\]"):
        blend.at(1.5)


def settings(files: dict[str, Path], encoder: str = "restyle_e4e", **changes) -> OmegaConf:
    return OmegaConf.create(
        {
            "input": str(PHOTOS),
            "backend": "inversion",
            "mode": "both",
            "min_face": 32,
            "degree": 1.0,
            "inversion": {
                "encoder": str(files[encoder]),
                "base": str(files["base"]),
                "blended": str(files["blended"]),
                "restyle_steps": 2,
            },
            **changes,
        }
    )


def test_cartoonize_backend_inversion_writes_faces_and_reports(files, tmp_path: Path) -> None:
    report = cartoonize_files(settings(files, degree=0.5), tmp_path / "out")
    assert report["backend"] == "inversion" and report["faces"] >= 3
    assert report["inversion"]["degree"] == 0.5 and report["inversion"]["restyle_steps"] == 2
    face = np.asarray(open_rgb(tmp_path / "out" / "two_faces_face1.png"))
    assert face.shape == (16, 16, 3)
    assert (tmp_path / "out" / "two_faces.png").is_file()


def open_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as picture:
        return picture.convert("RGB")


def test_degree_sweep_matches_base_and_blend_renders(files, tmp_path: Path) -> None:
    """Degree 0 and 1 are the base's and the blend's renders of the same latents, exactly."""
    truth = tmp_path / "paired"
    noise = np.random.default_rng(0)
    for side in ("A", "B"):
        for index in range(3):
            pixels = noise.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            save_image(Image.fromarray(pixels), truth / side / f"{index}.png")
    other = tmp_path / "pix2pix.json"
    other.write_text(json.dumps({"l1": 0.5, "psnr": 10.0, "ssim": 0.1, "pairs": 3}))
    cfg = settings(files, "e4e", mode="faces", input=str(PHOTOS / "two_faces.jpg"))
    cfg.ground_truth = {"root": str(truth), "max_pairs": 8, "compare": {"pix2pix": str(other)}}
    out = tmp_path / "out"
    written = degree_sweep(cfg, out, [0.0, 0.5, 1.0])
    assert written[3:] == ["degree_sweep.png", "ground_truth.json", "ground_truth_grid.png"]
    scores = json.loads((out / "ground_truth.json").read_text())
    assert sorted(scores["inversion"]) == ["0", "0.5", "1"]
    assert scores["inversion"]["0"]["pairs"] == 3 and scores["pix2pix"]["psnr"] == 10.0
    assert scores["inversion"]["0"]["l1"] != scores["inversion"]["1"]["l1"]
    reports = [
        json.loads((out / f"degree_{d}" / "report.json").read_text()) for d in ("0", "0.5", "1")
    ]
    assert [r["inversion"]["degree"] for r in reports] == [0.0, 0.5, 1.0]
    runner = load_inversion_runner(cfg.inversion)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ws = runner.latents(images)
    base, blended = generator(files, "base"), generator(files, "blended")
    with torch.no_grad():
        assert torch.equal(runner.render(ws, 0.0), render(base, ws))
        assert torch.equal(runner.render(ws, 1.0), render(blended, ws))
    faces = [
        np.asarray(open_rgb(out / f"degree_{d}" / "two_faces_face0.png"), dtype=int)
        for d in ("0", "0.5", "1")
    ]
    assert np.abs(faces[0] - faces[2]).mean() > 1.0


def test_inversion_errors_are_one_line(files, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="runs in PyTorch only"):
        cartoonize_files(settings(files, runtime="onnx"), tmp_path)
    with pytest.raises(UserError, match=r"degree=2\.0 is outside"):
        cartoonize_files(settings(files, degree=2.0), tmp_path)
    bad = settings(files)
    bad.inversion.blended = None
    with pytest.raises(UserError, match=r"inversion\.blended is not set"):
        cartoonize_files(bad, tmp_path)


def test_encoder_for_another_generator_is_refused(files) -> None:
    encoder = randomized(build_encoder({"kind": "e4e", "n_styles": 9, **ENCODER}), 0)
    bundle = EncoderBundle(encoder, torch.zeros(9, 16), {}, "other.pt")
    with pytest.raises(UserError, match="predicts 9 ws of 16; the generator takes 5"):
        Inverter(bundle, generator(files, "base"))


def test_bot_inversion_engine_draws_at_the_users_degree(files) -> None:
    from src.serve.bot import BotSettings, InversionEngine

    spec = {k: str(v) for k, v in settings(files, "e4e").inversion.items()}
    engine = InversionEngine(BotSettings(models={}, inversions={"toon": spec}, min_face=32), "toon")
    photo = np.asarray(open_rgb(PHOTOS / "astronaut.jpg"))
    photo_face, _ = engine(photo, degree=0.0)
    cartoon_face, _ = engine(photo, degree=1.0)
    assert len(photo_face) == 1 and photo_face[0].shape == (16, 16, 3)
    assert np.abs(photo_face[0].astype(int) - cartoon_face[0].astype(int)).mean() > 1.0
    with pytest.raises(UserError):
        engine(photo, degree=-1)
