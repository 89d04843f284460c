"""ADA: the augmentation pipe's ops and the controller that adapts p."""

from __future__ import annotations

import math

import pytest
import torch

from src.common.errors import UserError
from src.stylegan3.augment import OPS, PRESETS, AdaController, AugmentPipe, augment_grid


def smooth_images(count: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Images in [-1, 1] with structure at a few pixels' scale, like downsized faces."""
    coarse = torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse * 2 - 1, size=size, mode="bilinear")


def test_p_zero_is_exactly_the_identity() -> None:
    pipe = AugmentPipe("bgc")
    images = smooth_images()
    out = pipe(images)
    assert torch.equal(out, images)


@pytest.mark.parametrize("op", OPS)
def test_every_op_at_p_one_changes_images_and_keeps_them_finite_and_in_range(op: str) -> None:
    torch.manual_seed(1)
    pipe = AugmentPipe("none", **{op: 1.0})
    pipe.p.fill_(1.0)
    images = smooth_images(16)
    out = pipe(images)
    assert out.shape == images.shape
    assert torch.isfinite(out).all()
    # Geometric ops resample (never leave the input range); colour ops stay within a few units.
    limit = (
        1.0 + 1e-5
        if op in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
        else 8.0
    )
    assert out.abs().max() <= limit
    assert (out - images).abs().mean() > 1e-3


def test_gradients_reach_the_input() -> None:
    torch.manual_seed(2)
    pipe = AugmentPipe("bgc")
    pipe.p.fill_(0.7)
    images = smooth_images().requires_grad_(True)
    pipe(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_only_drawn_images_change_at_small_p() -> None:
    torch.manual_seed(3)
    pipe = AugmentPipe("bgc")
    pipe.p.fill_(0.05)
    images = smooth_images(64)
    changed = (pipe(images) != images).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) < 64


def test_xflip_flips_and_color_ops_leave_grey_on_the_grey_axis() -> None:
    torch.manual_seed(4)
    flip = AugmentPipe("none", xflip=1.0)
    flip.p.fill_(1.0)
    images = smooth_images(32)
    out = flip(images)
    flipped = (out - images.flip(3)).flatten(1).abs().amax(1) < 0.2
    same = torch.equal(out[~flipped], images[~flipped])
    assert flipped.any() and (~flipped).any() and same
    hue = AugmentPipe("none", hue=1.0, saturation=1.0)
    hue.p.fill_(1.0)
    grey = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(4, 3, 16, 16)
    assert torch.allclose(hue(grey), grey, atol=1e-5)


def test_unknown_preset_or_op_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown preset 'xyz'"):
        AugmentPipe("xyz")
    with pytest.raises(UserError, match="unknown op blur"):
        AugmentPipe("bgc", blur=1.0)
    assert set(PRESETS) >= {"b", "bg", "bgc", "c"}


def test_p_is_saved_with_the_module_state() -> None:
    pipe = AugmentPipe()
    pipe.p.fill_(0.25)
    other = AugmentPipe()
    other.load_state_dict(pipe.state_dict())
    assert float(other.p) == 0.25


def run_controller(controller: AdaController, logit: float, steps: int, batch: int = 8) -> list:
    adjusted = []
    for _ in range(steps):
        controller.accumulate(torch.full([batch, 1], logit))
        adjusted.append(controller.step(batch))
    return adjusted


def test_p_rises_when_d_overfits_and_falls_otherwise_by_the_exact_step() -> None:
    pipe = AugmentPipe()
    ada = AdaController(pipe, target=0.6, interval=4, speed_kimg=1)
    step = 8 * 4 / 1000
    adjusted = run_controller(ada, 3.0, 8)
    assert adjusted == [False, False, False, True] * 2
    assert float(pipe.p) == pytest.approx(2 * step, abs=1e-6)
    assert ada.rt == 1.0
    run_controller(ada, -2.0, 4)
    assert float(pipe.p) == pytest.approx(step, abs=1e-6)
    assert ada.rt == -1.0
    run_controller(ada, -2.0, 40)
    assert float(pipe.p) == 0.0


def test_p_is_clamped_to_one_and_reduce_sees_the_interval_totals() -> None:
    pipe = AugmentPipe()
    seen = []

    def reduce(stats: torch.Tensor) -> torch.Tensor:
        seen.append(stats.tolist())
        return stats * 2  # as if a second rank had the same statistics

    ada = AdaController(pipe, interval=2, speed_kimg=0.001, reduce=reduce)
    run_controller(ada, 1.0, 2, batch=4)
    assert seen == [[8.0, 8.0]]
    assert float(pipe.p) == 1.0


def test_state_dict_round_trip_continues_exactly() -> None:
    torch.manual_seed(5)
    logits = [torch.randn(8, 1) + 1.5 for _ in range(12)]
    pipe = AugmentPipe()
    ada = AdaController(pipe, speed_kimg=0.5)
    for x in logits[:6]:
        ada.accumulate(x)
        ada.step(8)
    resumed_pipe = AugmentPipe()
    resumed_pipe.load_state_dict(pipe.state_dict())
    resumed = AdaController(resumed_pipe, speed_kimg=0.5)
    resumed.load_state_dict(ada.state_dict())
    for x in logits[6:]:
        for controller in (ada, resumed):
            controller.accumulate(x)
            controller.step(8)
    assert float(resumed_pipe.p) == float(pipe.p) > 0
    assert resumed.rt == ada.rt and not math.isnan(ada.rt)


def test_augment_grid_shows_each_input_and_its_augmentations() -> None:
    pipe = AugmentPipe()
    pipe.p.fill_(0.5)
    picture = augment_grid(smooth_images(3), pipe, repeats=4)
    assert picture.size == (5 * 16 + 6 * 2, 3 * 16 + 4 * 2)


def test_preview_draws_every_op_and_the_preset(tmp_path) -> None:
    from PIL import Image

    from src.stylegan3.augment_preview import parse_args, preview

    out = preview(parse_args([f"out={tmp_path / 'a.png'}", "p=0.3", "size=32", "repeats=2"]))
    rows = len(PRESETS["bgc"]) + 3
    assert Image.open(out).size[1] > rows * 32
    with pytest.raises(UserError, match="unexpected argument 'q=1'"):
        parse_args(["out=x.png", "q=1"])
