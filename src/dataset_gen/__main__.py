"""``python -m src.dataset_gen +experiment=...``: paired (face, cartoon) images from shared noise.

Writes ``A/{seed:06d}.png`` (base generator: the face), ``B/{seed:06d}.png`` (blended
generator: its cartoon), ``manifest.jsonl`` (one row per pair: seed, paths, SHA-256 of both
images, the recipe and both generators' checksums) and ``preview.png``. A rerun keeps every
verified pair; ``trainer.devices=N`` (with a ddp strategy) splits the seeds over N processes.
See ``configs/dataset_gen/default.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from src.common import tags
from src.common.errors import UserError
from src.common.fileio import sha256_file
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.training import make_trainer
from src.common.visual import contact_sheet, enlarge_small, write_tensorboard_picture
from src.dataset_gen.module import PairGeneration
from src.dataset_gen.pairs import MANIFEST, PairRenderer, finish_manifest, unique_seeds
from src.stylegan3.generate import parse_seeds
from src.stylegan3.legacy import load_networks
from src.stylegan3.networks import family_of
from src.stylegan3.precision import stylegan_trainer_precision

PREVIEW = "preview.png"
PREVIEW_PAIRS = 8


def load_generator(path: str, network: str) -> Any:
    """``network`` (G_ema by default) of the checkpoint or official pickle at ``path``."""
    if network not in ("G", "G_ema"):
        raise UserError(f"dataset_gen.network: {network!r}; use G_ema or G")
    return load_networks(path)[network]


def write_preview(out_dir: Path, rows: list[dict[str, Any]], log_dir: Path) -> None:
    """A sheet of the first pairs, A beside B, to PNG and TensorBoard."""
    cells, captions = [], []
    for row in rows[:PREVIEW_PAIRS]:
        for key in ("a", "b"):
            with Image.open(out_dir / row[key]) as picture:
                cells.append(picture.convert("RGB"))
            captions.append(f"{key.upper()} {row['seed']}")
    sheet = contact_sheet(enlarge_small(cells), columns=4, captions=captions)
    save_image(sheet, out_dir / PREVIEW)
    write_tensorboard_picture(log_dir, tags.samples("pairs"), sheet)


def generate_pairs(ctx: StageContext) -> list[str]:
    """The stage function: plan, render the missing pairs on every rank, merge the manifest."""
    p = ctx.params
    seeds = unique_seeds(parse_seeds(p.seeds))
    base = load_generator(p.base, p.network)
    blended = load_generator(p.blended, p.network)
    size = None if p.size is None else int(p.size)
    settings: dict[str, Any] = {
        "psi": float(p.psi),
        "truncation_cutoff": None if p.truncation_cutoff is None else int(p.truncation_cutoff),
        "w_source": str(p.w_source),
        "translate": [float(v) for v in p.translate],
        "rotate": float(p.rotate),
        "size": size,
        "batch_invariant": bool(p.batch_invariant),
        "noise_mode": str(p.noise_mode),
    }
    renderer = PairRenderer(base, blended, **settings)
    # What made a pair: a recorded pair is reused only if all of this is unchanged.
    recipe = {
        **settings,
        "size": size or base.img_resolution,
        "network": str(p.network),
        "base_sha256": sha256_file(p.base),
        "blended_sha256": sha256_file(p.blended),
    }
    if family_of(base) == "stylegan3":
        # No noise inputs: the setting changes nothing, and pairs made before it existed stay.
        del recipe["noise_mode"]
    module = PairGeneration(
        renderer, ctx.out_dir, seeds, recipe, int(p.batch_size), int(p.num_workers)
    )
    trainer = make_trainer(ctx.cfg, precision=stylegan_trainer_precision(ctx.cfg, ctx.stage))
    started = time.perf_counter()
    trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier("dataset_gen: all pairs written")
    if trainer.is_global_zero:
        rows = finish_manifest(ctx.out_dir, seeds, recipe)
        write_preview(ctx.out_dir, rows, Path(ctx.cfg.paths.log_dir) / ctx.stage)
        made = len(seeds) - module.reused
        rate = made / max(time.perf_counter() - started, 1e-9)
        print(
            f"dataset_gen: {len(rows)} pairs in {ctx.out_dir / MANIFEST} "
            f"({module.reused} reused, {made} made, {rate:.1f} pairs/s)"
        )
    trainer.strategy.barrier("dataset_gen: manifest written")
    return [MANIFEST, "A", "B", PREVIEW]


if __name__ == "__main__":
    run_stage("dataset_gen", generate_pairs)
