"""Layer-wise blending of two StyleGAN generators of the same architecture (and family).

Every parameter and buffer of synthesis layer ``i`` becomes ``tuned * b[i] + base * (1 - b[i])``.
A StyleGAN3 generator's layers are ``synthesis.input``, then ``L0`` .. ``LN`` in its own order; a
StyleGAN2 generator's are its blocks ``b4``, ``b8``, .. ``b{res}`` (convs, noise and ToRGB), so a
hard switch by resolution is Toonify's layer swap. With the base a
real-face generator and the tuned one its cartoon fine-tune, low weights on the early, coarse
layers keep the face's structure and high weights on the late ones bring the cartoon look.

Policies (all keys of ``configs/blend/default.yaml``):

* ``mapping_from``: the mapping network (and its ``w_avg``) is copied whole from ``base`` or
  ``tuned``; it is never blended, so both generators of a pair can share one ``w``.
* ``input_layer``: what the input layer gets when the weights list one entry per ``L`` layer:
  ``first`` (the weight of L0), ``base`` (0) or ``tuned`` (1).
* ``affine``: the per-layer style affines are ``blend``-ed like the rest, or taken from ``base``
  (keeps the real colours) or ``tuned``.
* Buffers that vary (``magnitude_ema``) are blended with the layer's weight; the fixed ones
  (low-pass filters, Fourier frequencies and phases, the input transform) must be equal.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from src.common.errors import UserError
from src.stylegan3.networks import family_of

INPUT = "input"
# Buffers fixed at construction: two generators that blend must hold the same values.
FIXED_BUFFERS = ("up_filter", "down_filter", "freqs", "phases", "transform", "resample_filter")
Source = Literal["base", "tuned"]
Choice = Literal["blend", "base", "tuned"]
InputPolicy = Literal["first", "base", "tuned"]


@dataclass(frozen=True)
class BlendLayer:
    """One synthesis layer: its module name (``L3_36_32``), short name (``L3``) and the
    sampling rate of its output (its resolution, for schedules by resolution)."""

    name: str
    short: str
    resolution: int


def synthesis_layers(generator: nn.Module) -> list[BlendLayer]:
    """The generator's synthesis layers in order: the Fourier input, then L0 .. LN (StyleGAN3),
    or the blocks b4 .. b{res} (StyleGAN2)."""
    synthesis = generator.synthesis
    if family_of(generator) == "stylegan2":
        return [BlendLayer(f"b{res}", f"b{res}", res) for res in synthesis.block_resolutions]
    specs = synthesis.specs
    layers = [BlendLayer(INPUT, INPUT, specs[0].sampling_rate)]
    for name, spec in zip(synthesis.layer_names, specs, strict=True):
        layers.append(BlendLayer(name, name.split("_", 1)[0], spec.sampling_rate))
    return layers


def _names(layers: Sequence[BlendLayer]) -> str:
    return ", ".join(layer.short for layer in layers)


def _checked_weight(value: Any, where: str) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {value!r} is not a number; use a weight in [0, 1]") from None
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"{where}: {weight} is outside [0, 1]; 0 is the base, 1 the tuned net")
    return weight


def weights_from_list(
    values: Sequence[Any], layers: Sequence[BlendLayer], input_layer: InputPolicy = "first"
) -> list[float]:
    """One weight per layer from a list of len(L layers) entries (``input_layer`` decides the
    input's) or of one entry per layer including the input."""
    count = len(layers)
    if layers[0].name != INPUT:
        if len(values) != count:
            raise UserError(
                f"blend.weights has {len(values)} entries; this generator needs {count} "
                f"({layers[0].short}..{layers[-1].short}), or a mapping by layer name"
            )
        return [_checked_weight(v, f"blend.weights[{i}]") for i, v in enumerate(values)]
    if len(values) not in (count - 1, count):
        raise UserError(
            f"blend.weights has {len(values)} entries; this generator needs {count - 1} "
            f"(L0..L{count - 2}) or {count} (input, L0..L{count - 2}), or a mapping by layer name"
        )
    weights = [_checked_weight(v, f"blend.weights[{i}]") for i, v in enumerate(values)]
    if len(weights) == count:
        return weights
    first = {"first": weights[0], "base": 0.0, "tuned": 1.0}.get(input_layer)
    if first is None:
        raise UserError(f"blend.input_layer: {input_layer!r}; use first, base or tuned")
    return [first, *weights]


def weights_from_names(values: Mapping[str, Any], layers: Sequence[BlendLayer]) -> list[float]:
    """Weights from ``{layer: weight}`` (short ``L3`` or full ``L3_36_32`` names, ``input``),
    with ``default`` for the layers not named."""
    lookup = {layer.short: i for i, layer in enumerate(layers)}
    lookup.update({layer.name: i for i, layer in enumerate(layers)})
    default = values.get("default")
    weights: list[float | None] = [None] * len(layers)
    for key, value in values.items():
        if key == "default":
            continue
        if key not in lookup:
            raise UserError(
                f"blend.weights: unknown layer {key!r}; this generator's layers are "
                f"{_names(layers)} (or give a default)"
            )
        weights[lookup[key]] = _checked_weight(value, f"blend.weights.{key}")
    missing = [layers[i].short for i, w in enumerate(weights) if w is None]
    if missing and default is None:
        raise UserError(
            f"blend.weights names no weight for {', '.join(missing)}; add them or a default"
        )
    fallback = None if default is None else _checked_weight(default, "blend.weights.default")
    return [fallback if w is None else w for w in weights]


def weights_by_resolution(
    layers: Sequence[BlendLayer],
    switch_at: float,
    width: float = 0.0,
    low: float = 0.0,
    high: float = 1.0,
) -> list[float]:
    """A switch from ``low`` to ``high`` at layer resolution ``switch_at``: hard (layers at or
    above it get ``high``, as in Toonify's layer swapping) when ``width`` is 0, else a sigmoid
    in log2(resolution) with ``width`` octaves per e-fold."""
    if switch_at <= 0 or width < 0:
        raise UserError("blend.weights: switch_at must be > 0 and width >= 0")
    low = _checked_weight(low, "blend.weights.low")
    high = _checked_weight(high, "blend.weights.high")
    weights = []
    for layer in layers:
        if width == 0:
            share = 1.0 if layer.resolution >= switch_at else 0.0
        else:
            octaves = math.log2(layer.resolution) - math.log2(switch_at)
            share = 1.0 / (1.0 + math.exp(-octaves / width))
        weights.append(low + (high - low) * share)
    return weights


def resolve_weights(
    spec: Any, layers: Sequence[BlendLayer], input_layer: InputPolicy = "first"
) -> list[float]:
    """One weight per layer from any accepted form: a number, a list, ``{layer: w, default}``
    or ``{by: resolution, switch_at, width, low, high}``."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return [_checked_weight(spec, "blend.weights")] * len(layers)
    if isinstance(spec, Mapping):
        if "by" in spec:
            if spec["by"] != "resolution":
                raise UserError(f"blend.weights.by: {spec['by']!r}; the only option is resolution")
            options = {k: v for k, v in spec.items() if k != "by"}
            unknown = sorted(set(options) - {"switch_at", "width", "low", "high"})
            if unknown or "switch_at" not in options:
                raise UserError(
                    "blend.weights by resolution takes switch_at (required), width, low, high"
                    + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                )
            return weights_by_resolution(layers, **{k: float(v) for k, v in options.items()})
        return weights_from_names(spec, layers)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return weights_from_list(list(spec), layers, input_layer)
    raise UserError(f"blend.weights: cannot read {spec!r}; give a list, a mapping or a number")


def architecture_difference(base: nn.Module, tuned: nn.Module) -> str | None:
    """The first difference in parameter and buffer names or shapes, or None when the same."""
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    for key, value in base_state.items():
        if key not in tuned_state:
            return f"{key} exists only in the base"
        other = tuned_state[key]
        if value.shape != other.shape:
            return f"{key} is {tuple(value.shape)} in the base, {tuple(other.shape)} in the tuned"
    extra = [key for key in tuned_state if key not in base_state]
    return f"{extra[0]} exists only in the tuned generator" if extra else None


def check_same_family(base: nn.Module, tuned: nn.Module) -> None:
    """Refuse, in one line, to blend a StyleGAN2 with a StyleGAN3 generator."""
    if family_of(base) != family_of(tuned):
        raise UserError(
            f"the base is a {family_of(base)} generator and the tuned one a {family_of(tuned)} "
            "generator; blending needs two generators of one family"
        )


def _layer_of(key: str, layers: Sequence[BlendLayer]) -> int:
    for index, layer in enumerate(layers):
        if key.startswith(f"synthesis.{layer.name}."):
            return index
    raise UserError(f"generator tensor {key} belongs to no synthesis layer; cannot blend it")


def blend_generators(
    base: nn.Module,
    tuned: nn.Module,
    weights: Sequence[float],
    *,
    mapping_from: Source = "base",
    affine: Choice = "blend",
) -> nn.Module:
    """A new generator: the base's structure with every tensor blended per the module docstring.

    Raises UserError naming the first architecture difference or unequal fixed buffer.
    """
    if mapping_from not in ("base", "tuned"):
        raise UserError(f"blend.mapping_from: {mapping_from!r}; use base or tuned")
    if affine not in ("blend", "base", "tuned"):
        raise UserError(f"blend.affine: {affine!r}; use blend, base or tuned")
    check_same_family(base, tuned)
    difference = architecture_difference(base, tuned)
    if difference:
        raise UserError(
            f"base and tuned generators differ: {difference}; blending needs the same "
            "architecture (fine-tune the tuned one from the base)"
        )
    layers = synthesis_layers(base)
    if len(weights) != len(layers):
        raise ValueError(f"{len(weights)} weights for {len(layers)} synthesis layers")
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    blended = {}
    for key, base_value in base_state.items():
        tuned_value = tuned_state[key]
        if key.startswith("mapping."):
            blended[key] = (base_value if mapping_from == "base" else tuned_value).clone()
            continue
        if key.rsplit(".", 1)[-1] in FIXED_BUFFERS:
            if not torch.equal(base_value, tuned_value):
                raise UserError(
                    f"base and tuned generators differ in the fixed buffer {key}; they must "
                    "share filters and Fourier features (fine-tune the tuned one from the base)"
                )
            blended[key] = base_value.clone()
            continue
        weight = weights[_layer_of(key, layers)]
        if ".affine." in key and affine != "blend":
            weight = 0.0 if affine == "base" else 1.0
        blended[key] = mix(base_value, tuned_value, weight)
    result = copy.deepcopy(base)
    result.load_state_dict(blended)
    return result


def mix(base: torch.Tensor, tuned: torch.Tensor, weight: float) -> torch.Tensor:
    """``tuned * weight + base * (1 - weight)``, exactly ``base`` at 0 and ``tuned`` at 1."""
    if weight == 0.0:
        return base.clone()
    if weight == 1.0:
        return tuned.clone()
    return tuned * weight + base * (1.0 - weight)
