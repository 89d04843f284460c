"""The CycleGAN reference's generator files (``latest_net_G_A.pth``, ``latest_net_G_B.pth``) to and
from our generators.

U-Net files are pix2pix's business: they go straight through :mod:`src.pix2pix.interop`. The
reference's ResNet generator keeps its layers in one flat ``nn.Sequential`` (``model.10.
conv_block.1.weight`` is the first conv of the first residual block); our ResNet records the
reference path of each of its layers while it is built, :func:`key_mapping` turns those into a
key table, and loading and saving reuse pix2pix's checks (every key, every shape), its
wrapper-prefix stripping and its handling of stale buffers in old files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from src.common.errors import UserError
from src.cyclegan.resnet import ResnetGenerator
from src.pix2pix import interop as pix2pix_interop
from src.pix2pix.networks import UnetGenerator

RESNET_FAMILY = "CycleGAN ResNet generator"
RESNET_OPTIONS = "netG, ngf, norm, padding and use_dropout"
UNET_FAMILY = "CycleGAN U-Net generator"
# The reference's flat Sequential: stem (pad, conv, norm, ReLU) and two downsamplings
# (conv, norm, ReLU each) put the first residual block at index 10.
FIRST_BLOCK_INDEX = 10
RESIDUAL_BLOCK = re.compile(r"model\.(\d+)\.conv_block\.(\d+)\.weight")


def infer_generator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The generator settings a reference ``net_G`` state dict was saved with, off its keys.

    U-Nets are pix2pix's (:func:`src.pix2pix.interop.infer_generator_config`). For the ResNet:
    the block count, ``ngf`` and channels from the stem and the last conv, ``norm`` from what
    the reference adds per norm (batch: running stats; instance: conv biases; none: neither),
    ``padding`` zero when a block's first conv sits at index 0 (else reflect, the reference
    default: reflect and replicate pads hold no tensors) and ``use_dropout`` from where a
    block's second conv sits (the dropout layer shifts it by one).
    """
    state = pix2pix_interop.strip_wrappers(state)
    if "model.model.0.weight" in state:
        return {**pix2pix_interop.infer_generator_config(state), "padding": "reflect"}
    blocks: dict[int, list[int]] = {}
    for key in state:
        # Conv weights only (4-D): batch norm has 1-D weights at other indices.
        if (match := RESIDUAL_BLOCK.fullmatch(key)) and state[key].dim() == 4:
            blocks.setdefault(int(match.group(1)), []).append(int(match.group(2)))
    stem = state.get("model.1.weight")
    if stem is None or not blocks:
        raise UserError(
            "not a CycleGAN generator state dict (neither the U-Net's model.model.0.weight nor "
            "the ResNet's model.1.weight and model.<i>.conv_block.<j>.weight keys)"
        )
    first, second = sorted(blocks[min(blocks)])[:2]
    n_blocks = len(blocks)
    last = state[f"model.{FIRST_BLOCK_INDEX + n_blocks + 7}.weight"]
    if "model.1.bias" in state:
        norm = "instance"
    elif "model.2.running_mean" in state:
        norm = "batch"
    else:
        norm = "none"
    return {
        "netG": f"resnet_{n_blocks}blocks",
        "input_nc": int(stem.shape[1]),
        "output_nc": int(last.shape[0]),
        "ngf": int(stem.shape[0]),
        "norm": norm,
        "padding": "zero" if first == 0 else "reflect",
        "use_dropout": second - 2 * first - 3 == 1,
    }


def _resnet_key_mapping(generator: ResnetGenerator) -> dict[str, str]:
    by_length = sorted(generator.reference_paths.items(), key=lambda item: -len(item[0]))
    mapping = {}
    for key in generator.state_dict():
        module_path, tensor_name = key.rsplit(".", 1)
        for ours, reference in by_length:
            if module_path == ours or module_path.startswith(ours + "."):
                mapping[key] = f"{reference}{module_path[len(ours) :]}.{tensor_name}"
                break
        else:
            raise AssertionError(f"{key} has no reference path; ResnetGenerator must record it")
    return mapping


def key_mapping(generator: nn.Module) -> dict[str, str]:
    """Our state-dict key -> the reference's key, for every tensor of ``generator``."""
    if isinstance(generator, ResnetGenerator):
        return _resnet_key_mapping(generator)
    if isinstance(generator, UnetGenerator):
        return pix2pix_interop.key_mapping(generator)
    raise TypeError(f"no reference layout for {type(generator).__name__}")


def from_reference(
    generator: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Our state dict for ``generator`` from a reference-layout one (every key, every shape)."""
    if isinstance(generator, UnetGenerator):
        return pix2pix_interop.from_reference(generator, state, source, UNET_FAMILY)
    mapping = key_mapping(generator)
    ours = generator.state_dict()
    state = pix2pix_interop._strip_wrappers(dict(state))
    known = set(mapping.values())
    state = {
        k: v
        for k, v in state.items()
        if k in known or not k.endswith(pix2pix_interop.STALE_SUFFIXES)
    }
    for key, reference_key in mapping.items():
        if reference_key.endswith(pix2pix_interop.OPTIONAL_SUFFIX) and reference_key not in state:
            state[reference_key] = torch.zeros_like(ours[key])
    expected = {mapping[key]: value for key, value in ours.items()}
    pix2pix_interop._check_fit(state, expected, source, RESNET_FAMILY, RESNET_OPTIONS)
    return {key: state[reference_key] for key, reference_key in mapping.items()}


def to_reference(
    generator: nn.Module, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The reference-layout state dict of ``generator`` (or of ``state``, in our layout)."""
    if isinstance(generator, UnetGenerator):
        return pix2pix_interop.to_reference(generator, state)
    mapping = key_mapping(generator)
    ours = generator.state_dict() if state is None else pix2pix_interop._strip_wrappers(state)
    pix2pix_interop._check_fit(
        ours, generator.state_dict(), "our state dict", RESNET_FAMILY, RESNET_OPTIONS
    )
    return {mapping[key]: value.detach().cpu() for key, value in ours.items()}


def load_reference_generator(generator: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a reference generator file (``latest_net_G_A.pth``) into ``generator``; returns it."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(
            f"{path} is not a plain state dict of tensors (the reference's net_G files are)"
        )
    generator.load_state_dict(from_reference(generator, state, str(path)))
    return generator


def save_reference_generator(generator: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``generator`` as a reference-layout state dict file, atomically."""
    return save_checkpoint(to_reference(generator), path)
