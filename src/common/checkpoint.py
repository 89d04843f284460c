"""Checkpoint helpers: atomic saves, safe loads, and errors that say what does not fit.

Our own files load with ``torch.load(weights_only=True)``: tensors and plain containers only,
never code. Official checkpoints of other projects go through each stage's importer.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.errors import UserError
from src.common.fileio import atomic_path
from src.common.integrity import verify_recorded_sha256
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


# How files start: what a user may hand a loader by mistake, told apart before parsing.
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-zip) format opens with a protocol-2 pickle of this magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
IMAGE_MAGIC = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
}
PICKLE_PROTOCOLS = range(2, 6)
HEAD_BYTES = 64


def file_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` is by its first bytes: ``empty``, ``zip`` (torch's format), ``torch-legacy``,
    ``pickle`` (a raw pickle, e.g. NVIDIA's network pickles), ``text`` or a description
    such as ``a JPEG image``; ``unknown`` for anything else. Reads 64 bytes."""
    with Path(path).open("rb") as file:
        head = file.read(HEAD_BYTES)
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "torch-legacy"
    if head[0] == 0x80 and len(head) > 1 and head[1] in PICKLE_PROTOCOLS:
        return "pickle"
    for magic, name in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    return "text" if _is_text(head) else "unknown"


def _is_text(head: bytes) -> bool:
    """Whether ``head`` reads as UTF-8 text (its last character may be cut off)."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c.isspace() for c in text)
    return False


def not_a_model(source: Path, kind: str, wanted: str) -> UserError:
    """The one-line error for a file of ``kind`` (see :func:`file_kind`) where ``wanted`` is
    expected, saying what the file is and what to do."""
    if kind == "empty":
        return UserError(
            f"{source} is empty (0 bytes): it was not written or copied completely; "
            "write or download it again"
        )
    if kind == "text":
        return UserError(
            f"{source} is a text file, not {wanted} (a failed download, an HTML page or a Git "
            "LFS pointer?); download the real file"
        )
    if source.suffix.lower() == ".onnx":
        return UserError(f"{source} is an ONNX graph, not {wanted}; pass the .pt file it came from")
    if kind == "unknown":
        return UserError(f"{source} is not {wanted}: its first bytes match no known format")
    return UserError(f"{source} is {kind}, not {wanted}; pass the model file instead")


def first_line(err: BaseException, limit: int = 120) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters, for one-line errors."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text[:limit]


def refused_global(err: BaseException) -> str | None:
    """The global a weights-only load refused (``posix.system``), or None for other errors."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        return match.group(1) if match else "a global"
    return None


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> Any:
    """Load one of our checkpoints (tensors and plain containers only) onto ``map_location``.

    torch's zip files and its legacy format load with ``weights_only=True``, so no code ever
    runs. Anything else, and any file that does not parse (empty, truncated, damaged, a raw
    pickle, an image), is one :class:`UserError` line that says what the file is.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(
            f"checkpoint {source} does not exist; check the path in your config"
            f"{where_to_get(source)}"
        )
    verify_recorded_sha256(source)
    kind = file_kind(source)
    if kind == "pickle":
        raise UserError(
            f"{source} is a raw pickle, not a torch checkpoint; an official NVIDIA StyleGAN "
            "pickle goes straight into the StyleGAN commands or through python -m "
            "src.stylegan3.convert"
        )
    if kind not in ("zip", "torch-legacy"):
        raise not_a_model(source, kind, "a torch checkpoint")
    if kind == "zip" and not zipfile.is_zipfile(source):
        raise UserError(
            f"{source} is a truncated torch checkpoint (its zip index is missing); "
            "write or copy it again"
        )
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # parsing an untrusted file: every failure is the file's
        refused = refused_global(err)
        if refused:
            raise UserError(
                f"{source} holds pickled code (it asks for {refused}), which toonforge never "
                "runs; convert official checkpoints with the stage's importer"
            ) from None
        raise UserError(
            f"{source} is a damaged torch checkpoint ({first_line(err)}); write or copy it again"
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
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"{len(not_tensors)} entries are not tensors: {_listed(not_tensors)}"
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
