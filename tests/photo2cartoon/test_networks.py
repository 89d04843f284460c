"""Architecture checks: parameter counts equal the reference's, shapes, and the clippers."""

from __future__ import annotations

import pytest
import torch

from src.photo2cartoon.networks import (
    Discriminator,
    Generator,
    build_generator,
    clip_rho_and_w,
    count_parameters,
)


@pytest.mark.parametrize(
    ("kind", "ngf", "light", "expected"),
    [
        ("ugatit", 64, True, 10_589_888),
        ("ugatit", 64, False, 278_959_808),
        ("photo2cartoon", 32, True, 3_831_079),
    ],
)
def test_generator_parameter_counts_match_the_reference(
    kind: str, ngf: int, light: bool, expected: int
) -> None:
    with torch.device("meta"):
        generator = Generator(kind, ngf=ngf, img_size=256, light=light)
    assert count_parameters(generator) == expected


@pytest.mark.parametrize(("n_layers", "expected"), [(7, 13_294_048), (5, 826_080)])
def test_discriminator_parameter_counts_match_the_reference(n_layers: int, expected: int) -> None:
    assert count_parameters(Discriminator(3, ndf=32, n_layers=n_layers)) == expected


@pytest.mark.parametrize(("n_layers", "side"), [(7, 6), (5, 30)])
def test_discriminator_patch_sizes_at_256(n_layers: int, side: int) -> None:
    logits, cam_logit, _ = Discriminator(3, ndf=4, n_layers=n_layers)(torch.zeros(1, 3, 256, 256))
    assert logits.shape == (1, 1, side, side)
    assert cam_logit.shape == (1, 2)


@pytest.mark.parametrize("kind", ["ugatit", "photo2cartoon"])
def test_generator_forward_returns_one_image_and_attention_on_request(kind: str) -> None:
    generator = build_generator({"kind": kind, "ngf": 4, "img_size": 32, "n_res": 1})
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = generator(images)
    assert isinstance(out, torch.Tensor) and out.shape == images.shape
    assert out.abs().max() <= 1
    image, cam_logit, heatmap = generator.forward_with_attention(images)
    assert torch.equal(image, out)
    assert cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 8, 8)


def test_clippers_keep_rho_and_w_in_the_unit_interval() -> None:
    generator = Generator("photo2cartoon", ngf=4, img_size=32, n_res=1)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith(("rho", "w_gamma", "w_beta")):
                param.copy_(torch.linspace(-3, 3, param.numel()).view_as(param))
    untouched = generator.stem[1].weight.detach().clone()
    clip_rho_and_w(generator)
    clipped = [
        p for n, p in generator.named_parameters() if n.endswith(("rho", "w_gamma", "w_beta"))
    ]
    # ILN rho in the up blocks, AdaILN rho and both w in each decoder block.
    assert len(clipped) == 2 + 2 * 3
    for param in clipped:
        assert param.min() == 0 and param.max() == 1
    assert torch.equal(generator.stem[1].weight, untouched)
