"""Load released U-GAT-IT / photo2cartoon weights into our modules, by name and shape.

Both releases save one dict of six state dicts: ``genA2B``, ``genB2A`` (generators), ``disGA``,
``disGB`` (global critics), ``disLA``, ``disLB`` (local critics): photo2cartoon's
``photo2cartoon_weights.pt`` and U-GAT-IT's ``<dataset>_params_<iteration>.pt``. Their key
names follow the reference modules (``DownBlock.12.conv_block.1.weight``,
``HourGlass1.HG.0.ConvBlock1_1.ConvBlock1.3.weight``, ``model.1.weight_orig`` ...).

One function maps each of our keys to its reference name (:func:`reference_key`); loading
inverts it over the model's own keys, so a file must supply every key with the right shape,
and anything left over is reported. Files are read with ``weights_only=True``: no code runs.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError, load_checkpoint, state_dict_mismatch
from src.common.errors import UserError
from src.photo2cartoon.networks import Discriminator, Generator

NETWORK_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")
# Old-style spectral norm (torch.nn.utils.spectral_norm) keys of the releases, by our suffix.
SPECTRAL_SUFFIXES = {
    "parametrizations.weight.original": "weight_orig",
    "parametrizations.weight.0._u": "weight_u",
    "parametrizations.weight.0._v": "weight_v",
}
PREACT_BRANCHES = {"branch1": "ConvBlock1", "branch2": "ConvBlock2", "branch3": "ConvBlock3"}
PREACT_BRANCHES["shortcut"] = "ConvBlock4"
SOFT_NORM_NAMES = {
    "content_gamma": "c_gamma",
    "content_beta": "c_beta",
    "style_gamma": "s_gamma",
    "style_beta": "s_beta",
}
CAM_NAMES = {"gap_fc": "gap_fc", "gmp_fc": "gmp_fc", "fuse": "conv1x1"}


def _spectral(rest: str) -> str:
    for ours, theirs in SPECTRAL_SUFFIXES.items():
        if rest == ours:
            return theirs
    return rest


def _preact_key(parts: list[str]) -> str:
    """``branch1.3.weight`` -> ``ConvBlock1.3.weight`` (the hourglass's pre-activated block)."""
    return ".".join([PREACT_BRANCHES[parts[0]], *parts[1:]])


def _hourglass_block_key(parts: list[str]) -> str:
    """Our HourglassBlock key -> the reference's ``ConvBlock<level>_<1|2>`` / 5 / 6..9 names."""
    name, rest = parts[0], parts[1:]
    if name == "center":
        return f"ConvBlock5.{_preact_key(rest)}"
    index, rest = int(rest[0]), rest[1:]
    reference = {
        "skips": f"ConvBlock{index + 1}_1",
        "downs": f"ConvBlock{index + 1}_2",
        "ups": f"ConvBlock{index + 6}",
    }[name]
    return f"{reference}.{_preact_key(rest)}"


def _hourglass_module_key(parts: list[str]) -> str:
    name, rest = parts[0], parts[1:]
    if name == "body":
        index, inner = rest[0], rest[1:]
        if index == "0":
            return f"HG.0.{_hourglass_block_key(inner)}"
        if index == "1":
            return f"HG.1.{_preact_key(inner)}"
        return ".".join(["HG", *rest])
    reference = {"to_map": "Conv1", "features_out": "Conv2", "map_in": "Conv3"}[name]
    return ".".join([reference, *rest])


def _generator_key(key: str, kind: str) -> str:
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    tail = ".".join(rest)
    hourglass = kind == "photo2cartoon"
    if head == "stem":
        return f"ConvBlock1.{tail}" if hourglass else f"DownBlock.{tail}"
    if head == "head":
        return (
            f"ConvBlock2.{tail}"
            if hourglass
            else f"UpBlock2.{10 + int(rest[0])}.{'.'.join(rest[1:])}"
        )
    if head in ("hourglass_in", "hourglass_out"):
        number = int(rest[0]) + (1 if head == "hourglass_in" else 3)
        return f"HourGlass{number}.{_hourglass_module_key(rest[1:])}"
    if head == "down":
        index, inner = int(rest[0]), ".".join(rest[1:])
        return (
            f"DownBlock{index + 1}.{inner}"
            if hourglass
            else f"DownBlock.{4 + 4 * index + int(rest[1])}.{'.'.join(rest[2:])}"
        )
    if head == "encoder_blocks":
        index, inner = int(rest[0]), ".".join(rest[2:])  # rest[1] == "body"
        if hourglass:
            return f"EncodeBlock{index + 1}.conv_block.{inner}"
        return f"DownBlock.{12 + index}.conv_block.{inner}"
    if head == "cam":
        return ".".join([CAM_NAMES[rest[0]], *rest[1:]])
    if head == "style_mlp":
        return f"FC.{tail}"
    if head == "decoder_blocks":
        index, inner = int(rest[0]), rest[1:]
        if hourglass:
            inner = [SOFT_NORM_NAMES.get(part, part) for part in inner]
            return ".".join([f"DecodeBlock{index + 1}", *inner])
        return ".".join([f"UpBlock1_{index + 1}", *inner])
    if head == "up":
        index, inner = int(rest[0]), rest[1:]
        if hourglass:
            return ".".join([f"UpBlock{index + 1}", *inner])
        return ".".join(["UpBlock2", str(5 * index + int(inner[0])), *inner[1:]])
    return key  # gamma, beta


def _discriminator_key(key: str) -> str:
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    if head == "features":
        return f"model.{3 * int(rest[0]) + 1}.{_spectral('.'.join(rest[2:]))}"
    if head == "cam":
        return f"{CAM_NAMES[rest[0]]}.{_spectral('.'.join(rest[1:]))}"
    if head == "head":
        return f"conv.{_spectral('.'.join(rest[1:]))}"
    raise KeyError(key)


def reference_key(key: str, module: nn.Module) -> str:
    """The reference implementation's name for our state-dict ``key`` of ``module``."""
    if isinstance(module, Generator):
        return _generator_key(key, module.kind)
    if isinstance(module, Discriminator):
        return _discriminator_key(key)
    raise TypeError(f"no reference layout for {type(module).__name__}")


def to_reference_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s weights under the reference names (to run them in the released code)."""
    return {reference_key(k, module): v.detach().clone() for k, v in module.state_dict().items()}


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix of weights saved from ``nn.DataParallel``."""
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


def from_reference_state_dict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """A reference-layout ``state`` renamed to ``module``'s keys; every key and shape checked."""
    names = {reference_key(k, module): k for k in module.state_dict()}
    state = strip_data_parallel(state)
    # Old spectral norm may also store the normalised ``weight`` next to ``weight_orig``.
    extra = [
        k for k in state if k not in names and not (k.endswith(".weight") and f"{k}_orig" in state)
    ]
    if extra:
        shown = ", ".join(sorted(extra)[:5])
        raise CheckpointMismatchError(
            f"{source} does not fit {type(module).__name__}: {len(extra)} unexpected keys: "
            f"{shown}; check that it is a {_layout_name(module)} state dict"
        )
    renamed = {ours: state[theirs] for theirs, ours in names.items() if theirs in state}
    problem = state_dict_mismatch(module, renamed)
    if problem:
        raise CheckpointMismatchError(
            f"{source} does not fit {type(module).__name__}: {problem} (our names); check that "
            f"the model settings match the file"
        )
    return renamed


def _layout_name(module: nn.Module) -> str:
    if isinstance(module, Generator):
        return f"{module.kind} generator"
    return "U-GAT-IT discriminator"


def infer_generator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Generator settings (kind, ngf, n_res, light, img_size) read off a reference state dict."""
    hourglass = "ConvBlock1.1.weight" in state
    stem = state["ConvBlock1.1.weight" if hourglass else "DownBlock.1.weight"]
    ngf = int(stem.shape[0])
    width = 4 * ngf
    if hourglass:
        n_res = len({k.split(".")[0] for k in state if k.startswith("EncodeBlock")})
    else:
        n_res = len({k.split(".")[1] for k in state if re.match(r"DownBlock\.\d+\.conv_block", k)})
    mlp_in = int(state["FC.0.weight"].shape[1])
    light = mlp_in == width
    img_size = 256 if light else 4 * math.isqrt(mlp_in // width)
    return {
        "kind": "photo2cartoon" if hourglass else "ugatit",
        "ngf": ngf,
        "img_size": img_size,
        "light": light,
        "n_res": n_res,
        "in_channels": int(stem.shape[1]),
        "out_channels": int(
            state["ConvBlock2.1.weight" if hourglass else "UpBlock2.11.weight"].shape[0]
        ),
    }


def infer_discriminator_config(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Discriminator settings (in_channels, ndf, n_layers) read off a reference state dict."""
    first = state["model.1.weight_orig"]
    convs = {k.split(".")[1] for k in state if k.startswith("model.") and k.endswith("weight_orig")}
    return {
        "in_channels": int(first.shape[1]),
        "ndf": int(first.shape[0]),
        "n_layers": len(convs) + 1,
    }


def generator_from_reference(
    state: dict[str, torch.Tensor], source: str = "state dict"
) -> Generator:
    """A :class:`Generator` built to fit a reference-layout state dict and loaded from it."""
    state = strip_data_parallel(state)
    module = Generator(**infer_generator_config(state))
    module.load_state_dict(from_reference_state_dict(module, state, source))
    return module


def discriminator_from_reference(
    state: dict[str, torch.Tensor], source: str = "state dict"
) -> Discriminator:
    """A :class:`Discriminator` built to fit a reference-layout state dict and loaded from it."""
    state = strip_data_parallel(state)
    module = Discriminator(**infer_discriminator_config(state))
    module.load_state_dict(from_reference_state_dict(module, state, source))
    return module


def load_reference_checkpoint(path: str | os.PathLike[str]) -> dict[str, nn.Module]:
    """The six networks of a released ``photo2cartoon_weights.pt`` / ``*_params_*.pt`` file.

    Keys absent from the file (some releases hold the generators only) are left out.
    """
    source = Path(path)
    payload = load_checkpoint(source)
    if not isinstance(payload, dict) or "genA2B" not in payload:
        raise UserError(
            f"{source} is not a U-GAT-IT / photo2cartoon release (a dict with genA2B, genB2A, "
            "disGA, ...); pass photo2cartoon_weights.pt or a <dataset>_params_<n>.pt file"
        )
    networks: dict[str, nn.Module] = {}
    for name in NETWORK_NAMES:
        if name not in payload:
            continue
        label = f"{source} [{name}]"
        if name.startswith("gen"):
            networks[name] = generator_from_reference(payload[name], label)
        else:
            networks[name] = discriminator_from_reference(payload[name], label)
    return networks
