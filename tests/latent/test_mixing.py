"""Mixing: presets at relative depth, the identities (psi 1 / empty range, full range), and that
a range touches only its layers' ws and so only what those layers draw."""

from __future__ import annotations

import pytest
import torch

from src.common.errors import UserError
from src.latent.mixing import mix_ws, preset_range, resolve_mix
from tests.latent.helpers import drawn, known_ws, tiny_generator


def test_presets_are_the_seeds_layers_on_an_18_ws_generator() -> None:
    # The seed's 1-based inclusive 8-18 and 3-10 are 0-based [7, 18) and [2, 10).
    assert preset_range("style", 18) == (7, 18)
    assert preset_range("expression", 18) == (2, 10)


def test_presets_keep_their_relative_depth_on_other_generators() -> None:
    assert preset_range("style", 16) == (6, 16)  # StyleGAN3 at 1024
    assert preset_range("expression", 16) == (2, 9)
    assert preset_range("style", 14) == (5, 14)  # StyleGAN2 at 256
    for num_ws in range(4, 19):
        for name in ("style", "expression"):
            start, stop = preset_range(name, num_ws)
            assert 0 <= start < stop <= num_ws
        assert preset_range("style", num_ws)[1] == num_ws  # style always reaches the last layer


def test_resolve_mix_takes_the_preset_psi_and_explicit_overrides() -> None:
    assert resolve_mix(18, "style", None, None) == (7, 18, 0.0)
    assert resolve_mix(18, "expression", None, None) == (2, 10, 0.5)
    assert resolve_mix(18, "expression", [0, 4], 0.25) == (0, 4, 0.25)
    assert resolve_mix(16, None, [3, 5], 1.0) == (3, 5, 1.0)
    with pytest.raises(UserError, match="preset"):
        resolve_mix(16, None, [3, 5], None)
    with pytest.raises(UserError, match="layers"):
        resolve_mix(16, None, [5, 17], 0.0)
    with pytest.raises(UserError, match="preset"):
        resolve_mix(16, "smile", None, None)


def test_mix_identities_and_range() -> None:
    generator = tiny_generator("stylegan3")
    target, style = known_ws(generator, seed=1, count=2)
    assert torch.equal(mix_ws(target, style, 2, 2, 0.0), target)  # empty range
    assert torch.equal(mix_ws(target, style, 0, 5, 1.0), target)  # psi 1 keeps the target
    assert torch.equal(mix_ws(target, style, 0, generator.num_ws, 0.0), style)
    mixed = mix_ws(target, style, 1, 3, 0.5)
    assert torch.equal(mixed[:1], target[:1]) and torch.equal(mixed[3:], target[3:])
    assert torch.allclose(mixed[1:3], (target[1:3] + style[1:3]) / 2)
    w_avg = generator.mapping.w_avg
    truncated = mix_ws(target, style, 1, 3, 0.0, w_avg=w_avg, truncation=0.0)
    assert torch.allclose(truncated[1:3], w_avg.expand(2, -1))
    assert torch.equal(truncated[3:], target[3:])


@pytest.mark.parametrize("family", ["stylegan3", "stylegan2"])
def test_mixed_renders(family: str) -> None:
    generator = tiny_generator(family)
    target, style = known_ws(generator, seed=2, count=2)
    num_ws = generator.num_ws
    assert torch.equal(drawn(generator, mix_ws(target, style, 0, 0, 1.0)), drawn(generator, target))
    full = drawn(generator, mix_ws(target, style, 0, num_ws, 0.0))
    assert torch.equal(full, drawn(generator, style))
    # Changing only the last ws changes the picture, and the first ws stay the target's.
    late = mix_ws(target, style, num_ws - 2, num_ws, 0.0)
    assert torch.equal(late[: num_ws - 2], target[: num_ws - 2])
    assert not torch.equal(drawn(generator, late), drawn(generator, target))
