"""The three commands chained by the latent_seed002 experiment on the shipped test photos, with a
tiny StyleGAN3 in place of StyleGAN2 FFHQ and random stand-ins for VGG16 and the recogniser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, run_module
from tests.stylegan3.tiny import write_tiny_checkpoint

PHOTOS = REPO_ROOT / "tests" / "data" / "photos"


@pytest.mark.slow
def test_project_mix_swap_chain_on_the_test_photos(tmp_path: Path) -> None:
    network = write_tiny_checkpoint(tmp_path / "tiny.pt")
    overrides = [f"paths.root_dir={tmp_path}"]
    for stage in ("latent_project", "latent_mix", "latent_swap"):
        overrides.append(f"{stage}.network={network}")
    for name in ("actors", "styles", "expressions"):
        overrides.append(f"latent_project.targets.{name}={PHOTOS}")
    for stage, steps in (("latent_project", 3), ("latent_swap", 2)):
        overrides += [
            f"{stage}.num_steps={steps}",
            f"{stage}.w_avg_samples=200",
            f"{stage}.lpips.vgg16=random",
            f"{stage}.frame_every=1",
        ]
    overrides += ["latent_swap.identity.kind=mobilefacenet", "latent_swap.identity.weights=random"]
    result = run_module("src.pipeline", "+experiment=latent_seed002", *overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    run = tmp_path / "runs" / "latent_seed002"
    actors = run / "latent_project" / "actors"
    report = json.loads((actors / "report.json").read_text())
    stems = sorted(report["targets"])
    assert len(stems) >= 2  # faces found and aligned in the shipped photos
    for stem in stems:
        metrics = json.loads((actors / f"{stem}.json").read_text())
        assert metrics["steps"] == 3 and metrics["space"] == "w+"
        assert "random" in metrics["lpips_network"]
        assert metrics["noise_term"].startswith("skipped")  # StyleGAN3 has no noise inputs
        with Image.open(actors / f"{stem}_progress.gif") as gif:
            assert gif.n_frames == 3 and gif.size == (32, 16)  # target | render
    with Image.open(actors / "table.png") as table:
        assert table.width > 3 * 128

    mix = run / "latent_mix"
    expression = json.loads((mix / "expression.json").read_text())
    # 3-10 of 18 at the same relative depth of the tiny generator's 5 ws.
    assert expression["layers"] == [1, 3] and expression["psi"] == 0.5
    assert json.loads((mix / "style.json").read_text())["layers"] == [2, 5]
    assert len(list((mix / "style").glob("*.png"))) == len(stems) ** 2

    swap = run / "latent_swap"
    pairs = [f"{a}__{b}" for a in stems for b in stems if a != b]
    for pair in pairs:
        record = json.loads((swap / f"{pair}.json").read_text())
        assert record["steps"] == 2 and -1 <= record["similarity_to_identity"] <= 1
        assert (swap / f"{pair}_progress.gif").is_file()
    with Image.open(swap / "table.png") as table:
        assert table.width >= len(stems) * 128
