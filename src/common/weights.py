"""The weight files the toolkit reads but never downloads: where each comes from, and a check.

``python -m src.common.weights check [dir=weights]`` lists every known file, whether it is in
``dir`` (default: ``$TOONFORGE_ROOT/weights`` or ``./weights``) and its SHA-256, checked against
the table where the publisher fixes one (the FID Inception file's name ends with the first hex
digits of its SHA-256, as torch.hub names files). The README's "Weights" table says the same.

Errors for a missing file end with :func:`where_to_get`, so "does not exist" names the source.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from src.common.errors import UserError

NGC_FILES = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
NGC_PAGE = "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan3"


@dataclass(frozen=True)
class WeightsFile:
    """One row of the README's weights table."""

    name: str
    source: str
    keys: str
    # Leading hex digits of the SHA-256 the publisher fixes, when it fixes one.
    sha256_prefix: str | None = None


KNOWN_FILES = (
    *(
        WeightsFile(
            f"stylegan3-{cfg}-ffhqu-256x256.pkl",
            f"NVIDIA's StyleGAN3 release on NGC ({NGC_PAGE}; the file is {NGC_FILES}"
            f"stylegan3-{cfg}-ffhqu-256x256.pkl)",
            "stylegan3.init_from, blend.base, dataset_gen.base",
        )
        for cfg in ("t", "r")
    ),
    WeightsFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid's GitHub release fid_weights (mseitzer/pytorch-fid)",
        "stylegan3.metrics_kwargs.inception, photo2cartoon.inception",
        "6726825d",
    ),
    WeightsFile(
        "model_mobilefacenet.pth",
        "InsightFace_Pytorch (TreB1eN), the links in its README",
        "photo2cartoon.faceid_weights",
    ),
    WeightsFile(
        "photo2cartoon_weights.pt",
        "photo2cartoon (minivision-ai), the links in its README",
        "photo2cartoon.init_from",
    ),
    WeightsFile(
        "resnet18.safetensors",
        "timm on the Hugging Face Hub: timm/resnet18.a1_in1k, model.safetensors renamed",
        "cleaner.backbone.pretrained_file",
    ),
)
USAGE = "usage: python -m src.common.weights check [dir=WEIGHTS_DIR]"


def known_file(path: str | os.PathLike[str]) -> WeightsFile | None:
    """The table's row for ``path``'s file name, or None."""
    name = Path(path).name
    return next((row for row in KNOWN_FILES if row.name == name), None)


def where_to_get(path: str | os.PathLike[str]) -> str:
    """``; download NAME from SOURCE (README: Weights)`` for a known file, else ``""``."""
    row = known_file(path)
    if row is None:
        return ""
    return f"; download {row.name} from {row.source} (README: Weights)"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of ``path``'s bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_files(weights_dir: Path) -> list[tuple[WeightsFile, str, str]]:
    """``(row, status, sha256)`` for every known file: missing, ok, mismatch or unverified."""
    results = []
    for row in KNOWN_FILES:
        path = weights_dir / row.name
        if not path.is_file():
            results.append((row, "missing", ""))
            continue
        digest = sha256_of(path)
        if row.sha256_prefix is None:
            status = "present (no published checksum)"
        else:
            status = "ok" if digest.startswith(row.sha256_prefix) else "MISMATCH"
        results.append((row, status, digest))
    return results


def default_weights_dir() -> Path:
    """``paths.weights_dir`` of the configs: ``$TOONFORGE_ROOT/weights``, else ``./weights``."""
    return Path(os.environ.get("TOONFORGE_ROOT", ".")) / "weights"


def parse_args(argv: Sequence[str]) -> Path:
    """The folder to check from ``check [dir=...]``."""
    if not argv or argv[0] != "check":
        raise UserError(USAGE)
    folder = default_weights_dir()
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if key != "dir" or not sep or not value:
            raise UserError(f"unexpected argument {arg!r}; {USAGE}")
        folder = Path(value)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table for the folder; exit 1 when a checksum does not match."""
    try:
        folder = parse_args(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = check_files(folder)
    table = Table(title=f"weights in {folder}")
    for column in ("file", "status", "sha256", "config keys", "where to get it"):
        table.add_column(column, overflow="fold")
    for row, status, digest in results:
        table.add_row(row.name, status, digest, row.keys, row.source)
    Console(width=200).print(table)
    return 1 if any(status == "MISMATCH" for _, status, _ in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
