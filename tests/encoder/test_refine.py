"""Projection steps after the encoder (``inversion.project_steps``): 0 is the encoder alone,
exactly; more steps bring the render closer to a toy face photo; bad values are one-line errors;
and an official encoder given without its generator says the release's own one is not used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src.common.errors import UserError
from src.common.params import check_params
from src.common.stage import CONFIG_DIR
from src.common.toyfaces import make_face
from src.encoder.checkpoints import load_encoder
from src.encoder.inversion import render
from src.encoder.toonify import load_inversion_runner, load_refiner
from src.latent.projection import LatentStats, ProjectionSettings, project
from src.latent.projection import render as render_noise
from src.serve.cartoonize import cartoonize_files
from tests.encoder.reference_layout import ReferenceEncoder, randomized, write_release_checkpoint
from tests.encoder.test_toonify import files, generator, settings  # noqa: F401 (fixture)
from tests.latent.helpers import tiny_generator
from tests.serve.conftest import PHOTOS


def toy_photo(size: int = 16) -> torch.Tensor:
    """A toy face photo [1, 3, size, size] in [-1, 1] (area-downsampled from 64 px)."""
    photo = make_face(0, "photo", 0, 64).photo
    image = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float()
    return F.interpolate(image / 127.5 - 1, size=(size, size), mode="area")


def runner_with(files, steps: int | None, **projection):  # noqa: F811
    cfg = settings(files, "e4e").inversion
    if steps is not None:
        cfg.project_steps = steps
        cfg.projection = projection
    return load_inversion_runner(cfg)


def test_zero_steps_is_the_encoder_alone_exactly(files) -> None:  # noqa: F811
    before, zero = runner_with(files, None), runner_with(files, 0)
    assert zero.refiner is None and zero.project_steps == 0
    crops = toy_photo().repeat(2, 1, 1, 1).numpy()
    crops[1] = np.flip(crops[1], axis=2)
    assert np.array_equal(zero.run(crops), before.run(crops))


def test_projection_steps_lower_the_loss_on_a_toy_face(files) -> None:  # noqa: F811
    photo = toy_photo()
    base, blended = generator(files, "base"), generator(files, "blended")
    errors = {}
    for steps in (0, 5, 20):
        runner = runner_with(files, steps)
        ws = runner.latents(photo)
        with torch.no_grad():
            errors[steps] = float(F.mse_loss(render(base, ws), photo))
            # The cartoon is the blend's render of the refined latents.
            cartoon = torch.from_numpy(runner.run(photo.numpy()))
            assert torch.equal(cartoon, render(blended, ws).clamp(-1, 1))
    assert errors[20] < errors[5] < 0.95 * errors[0], errors


def test_bad_projection_settings_are_one_line_errors(files) -> None:  # noqa: F811
    base = generator(files, "base")
    with pytest.raises(UserError, match=r"inversion\.project_steps=-1: use 0"):
        load_refiner({}, -1, base)
    with pytest.raises(UserError, match=r"inversion\.projection\.lpips\.vgg16 is not set"):
        load_refiner({"lpips_weight": 1.0, "lpips": {"vgg16": None}}, 3, base)
    with pytest.raises(UserError, match=r"space: 'z'"):
        load_refiner({"space": "z"}, 3, base)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for stage in ("cartoonize", "toonify"):
            defaults = compose(stage)
            bad = compose(stage, [f"{stage}.inversion.project_steps=-2"])
            with pytest.raises(UserError, match=rf"{stage}.inversion.project_steps=-2: must be >="):
                check_params(bad, stage, defaults)
            check_params(compose(stage, [f"{stage}.inversion.project_steps=3"]), stage, defaults)
            bad = compose(stage, [f"{stage}.inversion.restyle_steps=0"])
            with pytest.raises(UserError, match=rf"{stage}.inversion.restyle_steps=0: must be >="):
                check_params(bad, stage, defaults)


def test_cartoonize_reports_the_projection_steps(files, tmp_path: Path) -> None:  # noqa: F811
    cfg = settings(files, "e4e", input=str(PHOTOS / "astronaut.jpg"))
    cfg.inversion.project_steps = 2
    report = cartoonize_files(cfg, tmp_path / "out")
    assert report["faces"] >= 1 and report["inversion"]["project_steps"] == 2


def test_projector_can_keep_the_generators_noise_inputs() -> None:
    """optimize_noise=False: the render uses the generator's stored noise inputs; NVIDIA's way
    (the default) starts them random and returns the optimised ones."""
    generator = tiny_generator("stylegan2")
    target = torch.rand(3, 16, 16) * 2 - 1
    start = generator.mapping.w_avg[None].expand(generator.num_ws, -1).clone()
    stats = LatentStats(start[0], 0.0)
    mse_only = {"num_steps": 3, "space": "w+", "lpips_weight": 0, "rec_weight": 1}
    kept = project(
        generator,
        target,
        ProjectionSettings(**mse_only, optimize_noise=False),
        stats=stats,
        start=start,
    )
    assert kept.noise == {}
    torch.testing.assert_close(kept.image, render_noise(generator, kept.ws[None])[0])
    nvidia = project(generator, target, ProjectionSettings(**mse_only), stats=stats, start=start)
    stored = {k: v for k, v in generator.synthesis.named_buffers() if "noise_const" in k}
    assert nvidia.noise.keys() == stored.keys()
    assert all(not torch.equal(nvidia.noise[k], stored[k]) for k in stored)


def test_a_release_without_a_base_says_its_own_generator_is_not_used(tmp_path: Path) -> None:
    """e4e_ffhq_encode.pt carries its StyleGAN2 decoder; toonforge takes the NVIDIA pickle."""
    reference = randomized(ReferenceEncoder("e4e", 5, 16, 32, 3, (16, 32, 48, 64), (1, 1, 1, 1)), 0)
    path = write_release_checkpoint(
        tmp_path / "e4e_ffhq_encode.pt", reference, "e4e", torch.zeros(5, 16)
    )
    assert load_encoder(path).official
    cfg = OmegaConf.create({"encoder": str(path), "base": None, "blended": "blended.pt"})
    with pytest.raises(UserError) as caught:
        load_inversion_runner(cfg)
    message = str(caught.value)
    assert message.startswith("inversion.base is not set: e4e_ffhq_encode.pt's own generator")
    assert "stylegan2-ffhq-1024x1024.pkl" in message and "\n" not in message
