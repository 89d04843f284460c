"""Render (face, cartoon) pairs from shared noise and keep the pair files trustworthy.

A pair is one seed: ``z`` from ``RandomState(seed)`` (as NVIDIA's tools draw it), ``w`` from a
mapping network, image A from the base (real-face) generator and image B from the blended
(cartoon) one; StyleGAN2 generators also share their stored noise (``noise_mode='const'``), so
A and B differ only by the weights. Files ``A/{seed:06d}.png`` and ``B/{seed:06d}.png`` appear
atomically (temp file + rename); only then is the pair's row (SHA-256 of both images and the
recipe that made them) appended to a journal. A later run trusts a pair only when its row
matches the current recipe and both files still hash to the recorded digests, so a run killed at
any instant resumes with no partial file and no duplicate, and ``manifest.jsonl`` is rebuilt
from verified rows only.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image
from torch import nn

from src.common.errors import UserError
from src.common.fileio import atomic_open, atomic_path, sha256_file
from src.stylegan3.generate import input_transform, latents_for, to_pil
from src.stylegan3.networks import family_of, noise_kwargs

MANIFEST = "manifest.jsonl"
JOURNAL_DIR = "journal"
PAIR_FILE = re.compile(r"^\d{6,}\.png$")
W_SOURCES = ("base", "own")


def pair_paths(seed: int) -> tuple[str, str]:
    """The A and B paths of ``seed``, relative to the output folder."""
    return f"A/{seed:06d}.png", f"B/{seed:06d}.png"


def unique_seeds(seeds: Iterable[int]) -> list[int]:
    """``seeds`` in order without repeats; each must fit ``RandomState`` (0 .. 2**32 - 1)."""
    result = list(dict.fromkeys(int(s) for s in seeds))
    bad = [s for s in result if not 0 <= s < 2**32]
    if bad:
        raise UserError(f"dataset_gen.seeds: seed {bad[0]} is outside 0 .. 2**32 - 1")
    if not result:
        raise UserError("dataset_gen.seeds is empty; give a range such as 0-999")
    return result


class PairRenderer(nn.Module):
    """Seeds -> (A, B) pictures from a base and a blended generator (StyleGAN3 or StyleGAN2).

    ``w_source`` ``base`` feeds the base mapping's ``w`` to both generators (the pair shares
    ``w`` exactly); ``own`` gives each generator its own mapping. With ``batch_invariant`` every
    seed runs through the networks alone, so its pixels never depend on the other seeds of a
    batch (CPU kernels round differently for different batch shapes); otherwise one forward
    pass per batch, faster on GPUs. ``noise_mode`` is StyleGAN2's (const, random or none).
    """

    def __init__(
        self,
        base: nn.Module,
        blended: nn.Module,
        *,
        psi: float = 1.0,
        truncation_cutoff: int | None = None,
        w_source: str = "base",
        translate: Sequence[float] = (0.0, 0.0),
        rotate: float = 0.0,
        size: int | None = None,
        batch_invariant: bool = True,
        noise_mode: str = "const",
    ) -> None:
        super().__init__()
        if w_source not in W_SOURCES:
            raise UserError(f"dataset_gen.w_source: {w_source!r}; use base or own")
        for what, net in (("base", base), ("blended", blended)):
            if net.c_dim:
                raise UserError(f"dataset_gen.{what} is conditional; use a generator with c_dim 0")
        if (base.z_dim, base.img_resolution) != (blended.z_dim, blended.img_resolution):
            raise UserError(
                f"dataset_gen: the base makes {base.img_resolution} px from z_dim {base.z_dim}, "
                f"the blended {blended.img_resolution} px from z_dim {blended.z_dim}; use a "
                "blend of this base"
            )
        if family_of(base) != family_of(blended):
            raise UserError(
                f"dataset_gen: the base is a {family_of(base)} generator, the blended a "
                f"{family_of(blended)} one; use a blend of this base"
            )
        self.noise = noise_kwargs(base, noise_mode)
        self.base = base.eval().requires_grad_(False)
        self.blended = blended.eval().requires_grad_(False)
        self.psi = psi
        self.truncation_cutoff = truncation_cutoff
        self.w_source = w_source
        self.size = size
        self.batch_invariant = batch_invariant
        if family_of(base) == "stylegan2":
            if any(translate) or rotate:
                raise UserError("dataset_gen.translate/rotate need StyleGAN3 generators; set 0")
            return
        transform = input_transform(translate, rotate, base.img_resolution)
        for net in (self.base, self.blended):
            net.synthesis.input.transform.copy_(transform)

    def _ws(self, net: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return net.mapping(
            z, None, truncation_psi=self.psi, truncation_cutoff=self.truncation_cutoff
        )

    @torch.no_grad()
    def images(self, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images A and B ([N, C, H, W] in about [-1, 1]) for ``seeds``."""
        if self.batch_invariant and len(seeds) > 1:
            parts = [self.images([seed]) for seed in seeds]
            return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
        device = self.base.mapping.fc0.weight.device
        z = latents_for(list(seeds), self.base.z_dim).to(device=device, dtype=torch.float32)
        ws_a = self._ws(self.base, z)
        ws_b = ws_a if self.w_source == "base" else self._ws(self.blended, z)
        return self.base.synthesis(ws_a, **self.noise), self.blended.synthesis(ws_b, **self.noise)

    def forward(self, seeds: Sequence[int]) -> list[tuple[Image.Image, Image.Image]]:
        """The (A, B) pictures of every seed, resized to ``size`` when set."""
        images_a, images_b = self.images(seeds)
        pictures = zip(to_pil(images_a), to_pil(images_b), strict=True)
        return [(self._resized(a), self._resized(b)) for a, b in pictures]

    def _resized(self, picture: Image.Image) -> Image.Image:
        if self.size is None or picture.width == self.size:
            return picture
        return picture.resize((self.size, self.size), Image.Resampling.LANCZOS)


def png_bytes(picture: Image.Image) -> bytes:
    """The PNG encoding of ``picture`` (deterministic: Pillow writes no timestamps)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_pair(
    out_dir: Path, seed: int, pair: tuple[Image.Image, Image.Image], recipe: dict[str, Any]
) -> dict[str, Any]:
    """Write both images atomically and return the pair's manifest row."""
    row: dict[str, Any] = {"seed": seed}
    for key, relative, picture in zip(("a", "b"), pair_paths(seed), pair, strict=True):
        data = png_bytes(picture)
        with atomic_path(out_dir / relative) as tmp:
            tmp.write_bytes(data)
        row[key] = relative
        row[f"sha256_{key}"] = hashlib.sha256(data).hexdigest()
    return {**row, **recipe}


class Journal:
    """Rows of finished pairs, appended one line each to a file of this attempt and rank."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` and flush it to the OS, so it survives the process being killed."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file (a journal that got no row was never created)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _rows_in(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of ``path``; a torn last line (the writer was killed) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("seed"), int):
                rows.append(row)
    return rows


def recorded_rows(out_dir: Path) -> list[dict[str, Any]]:
    """Rows of the manifest, then of every journal: candidates for pairs already made."""
    files = [out_dir / MANIFEST, *sorted((out_dir / JOURNAL_DIR).glob("*.jsonl"))]
    return [row for path in files if path.is_file() for row in _rows_in(path)]


def verified(out_dir: Path, row: dict[str, Any]) -> bool:
    """Both files of ``row`` exist and hash to the digests it recorded."""
    for key in ("a", "b"):
        path = out_dir / str(row.get(key, ""))
        if not path.is_file() or sha256_file(path) != row.get(f"sha256_{key}"):
            return False
    return True


@dataclass
class Plan:
    """Which requested seeds have a verified pair (with its row) and which must be made."""

    done: dict[int, dict[str, Any]]
    pending: list[int]


def plan_pairs(out_dir: Path, seeds: Sequence[int], recipe: dict[str, Any]) -> Plan:
    """Match recorded rows to the requested seeds; keep those made by this recipe that verify."""
    wanted = set(seeds)
    candidates: dict[int, list[dict[str, Any]]] = {}
    for row in recorded_rows(out_dir):
        same_recipe = all(row.get(key) == value for key, value in recipe.items())
        paths_ok = (row.get("a"), row.get("b")) == pair_paths(row["seed"])
        if row["seed"] in wanted and same_recipe and paths_ok:
            candidates.setdefault(row["seed"], []).append(row)
    done = {}
    for seed, rows in candidates.items():
        good = next((row for row in reversed(rows) if verified(out_dir, row)), None)
        if good is not None:
            done[seed] = good
    return Plan(done, [seed for seed in seeds if seed not in done])


def remove_partial_files(out_dir: Path) -> int:
    """Delete temporary files that a killed run left in A/ and B/; return how many."""
    removed = 0
    for folder in ("A", "B"):
        for tmp in (out_dir / folder).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def finish_manifest(out_dir: Path, seeds: Sequence[int], recipe: dict[str, Any]) -> list[dict]:
    """Write ``manifest.jsonl`` from verified rows of every requested seed, in seed order.

    Pair files of seeds no longer requested are removed (so A/ and B/ hold exactly the
    manifest), then the journals, whose rows the manifest now holds.
    """
    plan = plan_pairs(out_dir, seeds, recipe)
    if plan.pending:
        raise UserError(
            f"dataset_gen: {len(plan.pending)} pairs are missing or fail verification "
            f"(first seed {plan.pending[0]}); run the stage again to make them"
        )
    rows = [plan.done[seed] for seed in seeds]
    with atomic_open(out_dir / MANIFEST, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    kept = {name for row in rows for name in (row["a"], row["b"])}
    for folder in ("A", "B"):
        for path in (out_dir / folder).iterdir():
            if PAIR_FILE.match(path.name) and f"{folder}/{path.name}" not in kept:
                path.unlink()
    journals = out_dir / JOURNAL_DIR
    if journals.is_dir():
        for journal in journals.glob("*.jsonl"):
            journal.unlink()
        journals.rmdir()
    return rows
