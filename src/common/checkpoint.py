"""Checkpoint helpers: atomic saves, safe loads, and errors that say what does not fit.

Our own files load with ``torch.load(weights_only=True)``: tensors and plain containers only,
never code. Official checkpoints of other projects go through each stage's importer.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.errors import UserError
from src.common.fileio import atomic_path
from src.common.weights import where_to_get

MAX_LISTED = 5


class CheckpointMismatchError(UserError):
    """A checkpoint's tensors do not fit the configured model."""


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file + rename) and return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> Any:
    """Load one of our checkpoints (tensors and plain containers only) onto ``map_location``."""
    source = Path(path)
    if not source.is_file():
        raise UserError(
            f"checkpoint {source} does not exist; check the path in your config"
            f"{where_to_get(source)}"
        )
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"{source} holds pickled code, which toonforge never runs; convert official "
            f"checkpoints with the stage's importer ({str(err).splitlines()[0][:120]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(
            f"{source} is not a readable checkpoint (truncated or not a torch file): {err}"
        ) from None


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def state_dict_mismatch(
    module: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True
) -> str | None:
    """Why ``state_dict`` does not fit ``module`` (missing, unexpected, shapes), or None."""
    expected = module.state_dict()
    problems = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing and strict:
        problems.append(f"{len(missing)} missing keys: {_listed(missing)}")
    if unexpected and strict:
        problems.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listed(shapes)}")
    return "; ".join(problems) or None


def load_state_dict_checked(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str | os.PathLike[str],
    strict: bool = True,
) -> None:
    """Load ``state_dict`` into ``module``, or raise one error naming the file and every misfit."""
    problem = state_dict_mismatch(module, state_dict, strict)
    if problem:
        raise CheckpointMismatchError(
            f"{source} does not fit {type(module).__name__}: {problem}; "
            "check that the model config matches the one the checkpoint was trained with"
        )
    module.load_state_dict(state_dict, strict=strict)
