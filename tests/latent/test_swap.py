"""Face swap: projection with the identity term. Weight 0 is plain projection, a weight pulls the
render's identity towards face B (with a random-weight recogniser: its own loss falls)."""

from __future__ import annotations

import pytest
import torch

from src.common.faceid import IdentityEncoder, IResNet, ffhq_face_crop
from src.latent.projection import ProjectionSettings, project
from tests.latent.helpers import drawn, known_ws, stats_of, tiny_generator


@pytest.fixture(scope="module")
def faces():
    generator = tiny_generator("stylegan3")
    a, b = known_ws(generator, seed=21, count=2)
    torch.manual_seed(0)
    # A one-block-a-stage IResNet: ArcFace's structure at a size a CPU test can afford.
    encoder = IdentityEncoder(IResNet((1, 1, 1, 1)), ffhq_face_crop, "tiny random IResNet")
    return generator, stats_of(generator), drawn(generator, a), drawn(generator, b), encoder


def settings(weight: float, steps: int) -> ProjectionSettings:
    return ProjectionSettings(
        num_steps=steps, lpips_weight=0.0, rec_weight=1.0, identity_weight=weight, seed=3
    )


def test_identity_weight_zero_is_plain_projection(faces) -> None:
    generator, stats, image_a, image_b, encoder = faces
    plain = project(generator, image_a, settings(0.0, 4), stats=stats)
    with_net = project(
        generator,
        image_a,
        settings(0.0, 4),
        stats=stats,
        identity=encoder,
        identity_reference=encoder(image_b[None])[0],
    )
    assert torch.equal(plain.ws, with_net.ws)
    assert torch.equal(plain.image, with_net.image)


@pytest.mark.slow
def test_identity_term_pulls_towards_face_b(faces) -> None:
    generator, stats, image_a, image_b, encoder = faces
    reference = encoder(image_b[None])[0]
    runs = {
        weight: project(
            generator,
            image_a,
            settings(weight, 10),
            stats=stats,
            identity=encoder,
            identity_reference=reference,
        )
        for weight in (0.0, 5.0)
    }
    swapped = runs[5.0]
    assert swapped.history[-1]["identity"] < swapped.history[0]["identity"]

    def distance(image: torch.Tensor) -> float:
        return float(encoder.distance(image[None], reference[None])[0])

    assert distance(swapped.image) < distance(swapped.start_image)
    assert distance(swapped.image) < distance(runs[0.0].image)
