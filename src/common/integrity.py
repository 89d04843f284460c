"""SHA-256 of a stage's output files, recorded in its ``done.json`` and checked on load.

``torch.load`` does not check the CRCs of its zip archive, so a bit-flipped ``generator.pt``
loads and renders garbage silently. A finished stage records the SHA-256 of every output file;
whoever loads one of them later (a later stage, ``cartoonize``, the bot) calls
:func:`verify_recorded_sha256` first and gets a one-line error naming the file when it changed.

This module imports no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from src.common.errors import UserError
from src.common.fileio import sha256_file

DONE_FILE = "done.json"
CHECKSUMS_KEY = "sha256"
# How many folders above a file its stage's done.json may be (generator.pt: 1,
# checkpoints/last.ckpt: 2).
SEARCH_DEPTH = 3


def output_checksums(out_dir: Path, outputs: Iterable[str]) -> dict[str, str]:
    """``{output: sha256}`` for each output of ``out_dir`` that is a file (folders are skipped)."""
    checksums = {}
    for name in outputs:
        path = Path(out_dir) / name
        if path.is_file():
            checksums[name] = sha256_file(path)
    return checksums


def recorded_sha256(path: Path) -> tuple[Path, str, str] | None:
    """``(done.json, stage, sha256)`` of the finished stage that lists ``path``, or None."""
    path = Path(os.path.abspath(path))
    for folder in list(path.parents)[:SEARCH_DEPTH]:
        done = folder / DONE_FILE
        try:
            record = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or not isinstance(record.get(CHECKSUMS_KEY), dict):
            continue
        relative = path.relative_to(folder).as_posix()
        digest = record[CHECKSUMS_KEY].get(relative)
        if isinstance(digest, str):
            return done, str(record.get("stage", folder.name)), digest
    return None


def verify_recorded_sha256(path: str | os.PathLike[str]) -> None:
    """Raise a one-line :class:`UserError` when ``path`` differs from what its stage recorded.

    Files no stage recorded (a user's own weights) pass unchecked.
    """
    source = Path(path)
    found = recorded_sha256(source)
    if found is None or not source.is_file():
        return
    done, stage, expected = found
    if sha256_file(source) != expected:
        raise UserError(
            f"{source} does not match the SHA-256 that {stage} recorded in {done}: the file "
            f"changed or is corrupt; restore it or rerun {stage} (pipeline.force=[{stage}])"
        )
