"""Style and expression transfer by mixing projected latents layer by layer.

On a range of layers ``[start, stop)`` (0-based) the target's ws are interpolated towards the
style image's: ``mixed = style + psi * (target - style)``, so ``psi`` is the share of the target
kept there (the seed's coefficient: 0.0 takes the style's ws as they are). ``truncation`` then
pulls the mixed range towards ``w_avg`` (1: not at all), as StyleGAN's truncation trick does.
Outside the range the target's ws are untouched.

Presets are the seed's, written for an 18-ws generator (StyleGAN2 at 1024) in 1-based inclusive
layer numbers: ``style`` 8-18 with psi 0.0 (light, colours, texture from the style image; the
face's shape and expression kept), ``expression`` 3-10 with psi 0.5 (pose and expression). For a
generator with another ``num_ws`` (StyleGAN3 at 1024 has 16) the range keeps its relative depth:
the 0-based bounds ``[a - 1, b)`` of 18 are scaled by ``num_ws / 18`` and rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from src.common.errors import UserError

REFERENCE_NUM_WS = 18


@dataclass(frozen=True)
class Preset:
    """A seed recipe: 1-based inclusive layers of an 18-ws generator and psi."""

    first: int
    last: int
    psi: float


PRESETS = {
    "style": Preset(8, 18, 0.0),
    "expression": Preset(3, 10, 0.5),
}


def preset_range(name: str, num_ws: int) -> tuple[int, int]:
    """The 0-based ``[start, stop)`` of preset ``name`` re-expressed for ``num_ws`` layers."""
    if name not in PRESETS:
        raise UserError(f"preset: {name!r}; use one of {', '.join(PRESETS)} or layers=[a,b]")
    preset = PRESETS[name]
    scale = num_ws / REFERENCE_NUM_WS
    return round((preset.first - 1) * scale), round(preset.last * scale)


def resolve_mix(
    num_ws: int, preset: str | None, layers: list[int] | None, psi: float | None
) -> tuple[int, int, float]:
    """``(start, stop, psi)`` from a preset and/or explicit ``layers=[start, stop)`` (0-based)
    and ``psi``; explicit values win over the preset's."""
    if preset is None and (layers is None or psi is None):
        raise UserError("mixing needs a preset (style, expression) or both layers=[a,b] and psi")
    start, stop = preset_range(preset, num_ws) if preset is not None else (0, 0)
    if layers is not None:
        if len(layers) != 2 or not 0 <= layers[0] <= layers[1] <= num_ws:
            raise UserError(
                f"layers: {list(layers)}; give [start, stop) with 0 <= start <= stop <= {num_ws}"
            )
        start, stop = int(layers[0]), int(layers[1])
    mix_psi = float(psi) if psi is not None else PRESETS[str(preset)].psi
    return start, stop, mix_psi


def mix_ws(
    target: torch.Tensor,
    style: torch.Tensor,
    start: int,
    stop: int,
    psi: float,
    *,
    w_avg: torch.Tensor | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """``target`` [num_ws, w_dim] with layers ``[start, stop)`` mixed towards ``style``."""
    if target.shape != style.shape:
        raise UserError(f"target ws {tuple(target.shape)} and style ws {tuple(style.shape)} differ")
    mixed = target.clone()
    # lerp is exact at both ends: psi 0 gives the style's ws, psi 1 the target's.
    part = torch.lerp(style[start:stop], target[start:stop], psi)
    if truncation != 1.0:
        if w_avg is None:
            raise UserError("truncation != 1 needs the generator's w_avg")
        part = torch.lerp(w_avg.to(part).expand_as(part), part, truncation)
    mixed[start:stop] = part
    return mixed
