"""The pix2pix release's generator files (``latest_net_G.pth``) to and from our U-Net.

The release nests its U-Net: ``UnetGenerator.model`` is the outermost block, and each block
keeps its layers in a ``Sequential`` named ``model`` with the inner block at index 1
(outermost) or 3 (others). Hence ``model.model.1.model.3.model.1.weight`` is the down conv of
level 2 (the outermost is level 0). Within a block's ``Sequential``:

- outermost: 0 down conv, 1 inner block, 2 ReLU, 3 up conv, 4 Tanh;
- middle: 0 LeakyReLU, 1 down conv, 2 norm, 3 inner block, 4 ReLU, 5 up conv, 6 norm, 7 dropout;
- innermost: 0 LeakyReLU, 1 down conv, 2 ReLU, 3 up conv, 4 norm.

Our flat names (``down.<level>.conv``, ``up.<level>.norm``, ...) map one to one onto these;
:func:`key_mapping` builds the table for a given generator and both directions check every
key and every shape, so a file that does not fit fails with a list of what does not.
Files are plain state dicts and load with ``weights_only=True``: no code runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from src.common.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from src.common.errors import UserError
from src.pix2pix.networks import UnetGenerator

# Index of each layer in a release block's Sequential, by block kind and our layer name.
OUTERMOST = {"down.conv": 0, "inner": 1, "up.conv": 3}
MIDDLE = {"down.conv": 1, "down.norm": 2, "inner": 3, "up.conv": 5, "up.norm": 6}
INNERMOST = {"down.conv": 1, "up.conv": 3, "up.norm": 4}
# Prefixes that wrappers add in front of every key (DataParallel, DDP, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Buffers the release's files can lack (saved before PyTorch 0.4.1) or carry for nothing
# (instance norm's running stats in files saved before PyTorch 0.4).
OPTIONAL_SUFFIX = ".num_batches_tracked"
STALE_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
MAX_LISTED = 5


def block_prefix(level: int) -> str:
    """Where the release keeps the ``Sequential`` of the block at ``level`` (0 = outermost)."""
    if level == 0:
        return "model.model."
    return "model.model.1.model." + "3.model." * (level - 1)


def _layer_index(level: int, num_downs: int, layer: str) -> int:
    table = OUTERMOST if level == 0 else INNERMOST if level == num_downs - 1 else MIDDLE
    return table[layer]


def key_mapping(generator: UnetGenerator) -> dict[str, str]:
    """Our state-dict key -> the release's key, for every tensor of ``generator``."""
    mapping = {}
    for key in generator.state_dict():
        side, level_text, layer, tensor_name = key.split(".", 3)
        level = int(level_text)
        index = _layer_index(level, generator.num_downs, f"{side}.{layer}")
        mapping[key] = f"{block_prefix(level)}{index}.{tensor_name}"
    return mapping


def _listed(keys: list[str]) -> str:
    more = len(keys) - MAX_LISTED
    return ", ".join(keys[:MAX_LISTED]) + (f" (+{more} more)" if more > 0 else "")


def _check_fit(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    source: str,
    family: str = "pix2pix U-Net",
    options: str = "netG, ngf, norm and use_dropout",
) -> None:
    """Raise one error naming every missing key, unexpected key and shape that differs.

    ``family`` names the generator the file was expected to hold, ``options`` the settings
    that decide its layout.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listed(shapes)}")
    if problems:
        raise CheckpointMismatchError(
            f"{source} does not fit the configured {family}: {'; '.join(problems)}; "
            f"check {options} against the options it was trained with"
        )


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the prefixes DataParallel, DDP or torch.compile put on every key."""
    return _strip_wrappers(dict(state))


def infer_generator_config(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The U-Net settings a release-layout state dict was saved with, read off its keys.

    Depth (``netG``) from the deepest nested block, ``ngf`` and the channel counts from the
    outermost convs, ``norm`` from the layers the release adds per norm (batch: running stats;
    instance: conv biases and no norm tensors; none: neither). Dropout holds no tensors, so
    ``use_dropout`` keeps the release default (it does nothing in eval mode).
    """
    state = _strip_wrappers(dict(state))
    outer_down = state.get("model.model.0.weight")
    outer_up = state.get("model.model.3.weight")
    if outer_down is None or outer_up is None:
        raise UserError(
            "not a pix2pix U-Net state dict (no model.model.0.weight / model.model.3.weight)"
        )
    depth = 1
    while any(key.startswith(block_prefix(depth)) for key in state):
        depth += 1
    # Instance-norm files saved before PyTorch 0.4 carry running stats too: biases decide.
    if f"{block_prefix(1)}1.bias" in state:
        norm = "instance"
    elif any(key.endswith(".running_mean") for key in state):
        norm = "batch"
    else:
        norm = "none"
    return {
        "netG": f"unet_{2**depth}",
        "input_nc": int(outer_down.shape[1]),
        "output_nc": int(outer_up.shape[1]),
        "ngf": int(outer_down.shape[0]),
        "norm": norm,
        "use_dropout": True,
    }


def from_reference(
    generator: UnetGenerator,
    state: dict[str, torch.Tensor],
    source: str = "state dict",
    family: str = "pix2pix U-Net",
) -> dict[str, torch.Tensor]:
    """Our state dict for ``generator`` from a release-layout one (every key, every shape);
    ``family`` names the generator in errors."""
    mapping = key_mapping(generator)
    ours = generator.state_dict()
    state = _strip_wrappers(dict(state))
    known = set(mapping.values())
    # Old files: instance norm kept running stats, batch norm had no num_batches_tracked.
    state = {k: v for k, v in state.items() if k in known or not k.endswith(STALE_SUFFIXES)}
    for key, reference_key in mapping.items():
        if reference_key.endswith(OPTIONAL_SUFFIX) and reference_key not in state:
            state[reference_key] = torch.zeros_like(ours[key])
    expected = {mapping[key]: value for key, value in ours.items()}
    _check_fit(state, expected, source, family)
    return {key: state[reference_key] for key, reference_key in mapping.items()}


def to_reference(
    generator: UnetGenerator, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The release-layout state dict of ``generator`` (or of ``state``, in our layout)."""
    mapping = key_mapping(generator)
    ours = generator.state_dict() if state is None else _strip_wrappers(dict(state))
    _check_fit(ours, generator.state_dict(), "our state dict")
    return {mapping[key]: value.detach().cpu() for key, value in ours.items()}


def load_reference_generator(
    generator: UnetGenerator, path: str | os.PathLike[str]
) -> UnetGenerator:
    """Load a release generator file (``latest_net_G.pth``) into ``generator``; returns it."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(
            f"{path} is not a plain state dict of tensors (the release's net_G files are)"
        )
    generator.load_state_dict(from_reference(generator, state, str(path)))
    return generator


def save_reference_generator(generator: UnetGenerator, path: str | os.PathLike[str]) -> Path:
    """Write ``generator`` as a release-layout state dict file, atomically."""
    return save_checkpoint(to_reference(generator), path)
