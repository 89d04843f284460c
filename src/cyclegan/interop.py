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
from pathlib import Path

import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from src.cyclegan.resnet import ResnetGenerator
from src.pix2pix import interop as pix2pix_interop
from src.pix2pix.networks import UnetGenerator


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
        return pix2pix_interop.from_reference(generator, state, source)
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
    pix2pix_interop._check_fit(state, expected, source)
    return {key: state[reference_key] for key, reference_key in mapping.items()}


def to_reference(
    generator: nn.Module, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The reference-layout state dict of ``generator`` (or of ``state``, in our layout)."""
    if isinstance(generator, UnetGenerator):
        return pix2pix_interop.to_reference(generator, state)
    mapping = key_mapping(generator)
    ours = generator.state_dict() if state is None else pix2pix_interop._strip_wrappers(state)
    pix2pix_interop._check_fit(ours, generator.state_dict(), "our state dict")
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
