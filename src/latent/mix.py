"""``python -m src.latent.mix +experiment=...``: style / expression transfer between projected
latents (see :mod:`src.latent.mixing` for the rule and the presets).

For each table in ``latent_mix.tables`` ({name: {styles, preset, layers, psi}}) every target of
``latent_mix.targets`` (a folder of projected latents) is mixed with every style image's latents
and rendered. Writes ``<name>.png`` (rows targets, columns styles; the originals on the top row
and the left column: the aligned crops when they lie beside the latents, else the renders),
``<name>/<target>__<style>.png`` and ``<name>.json`` (layers and psi used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image

from src.common import tags
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.visual import contact_sheet, enlarge_small, write_tensorboard_picture
from src.latent.io import (
    Latents,
    latents_in,
    load_generator_network,
    load_latents,
    original_picture,
    pick_device,
    to_picture,
)
from src.latent.mixing import mix_ws, resolve_mix
from src.latent.projection import render

NOISE_SOURCES = ("target", "stored")


def original(generator: torch.nn.Module, path: Path, latents: Latents) -> Image.Image:
    """The aligned crop beside a latents file, else the render of its latents."""
    picture = original_picture(path)
    if picture is not None:
        return picture.resize((generator.img_resolution,) * 2)
    return to_picture(render(generator, latents.ws[None], latents.noise)[0])


def mix_table(
    generator: torch.nn.Module,
    targets: dict[str, Path],
    styles: dict[str, Path],
    start: int,
    stop: int,
    psi: float,
    *,
    truncation: float,
    noise_source: str,
    out: Path,
) -> Image.Image:
    """Render every target x style mix into ``out`` and return the table."""
    w_avg = generator.mapping.w_avg.detach().cpu()
    target_latents = {stem: load_latents(path, generator) for stem, path in targets.items()}
    style_latents = {stem: load_latents(path, generator) for stem, path in styles.items()}
    blank = Image.new("RGB", (generator.img_resolution,) * 2, (255, 255, 255))
    cells = [blank] + [original(generator, styles[s], style_latents[s]) for s in styles]
    captions = [""] + [f"style {s}" for s in styles]
    for stem, latents in target_latents.items():
        cells.append(original(generator, targets[stem], latents))
        captions.append(stem)
        for style_stem, style in style_latents.items():
            ws = mix_ws(latents.ws, style.ws, start, stop, psi, w_avg=w_avg, truncation=truncation)
            noise = latents.noise if noise_source == "target" else None
            picture = to_picture(render(generator, ws[None], noise)[0])
            save_image(picture, out / f"{stem}__{style_stem}.png")
            cells.append(picture)
            captions.append(f"{stem} x {style_stem}")
    return contact_sheet(enlarge_small(cells, 128), columns=len(styles) + 1, captions=captions)


def mix_stage(ctx: StageContext) -> list[str]:
    """The stage function: one table per entry of ``tables``."""
    p = ctx.params
    if p.noise not in NOISE_SOURCES:
        raise UserError(f"noise: {p.noise!r}; use one of {', '.join(NOISE_SOURCES)}")
    generator = load_generator_network(str(p.network), str(p.network_key), pick_device(p.device))
    targets = latents_in(p.targets, "targets")
    tables = OmegaConf.to_container(p.tables, resolve=True)
    if not isinstance(tables, dict) or not tables:
        raise UserError("tables: give {name: {styles: folder, preset: style}, ...}")
    outputs = []
    for name, spec in tables.items():
        spec: dict[str, Any] = spec or {}
        if not spec.get("styles"):
            raise UserError(f"tables.{name}.styles: set it to a folder of projected latents")
        styles = latents_in(spec["styles"], f"tables.{name}.styles")
        start, stop, psi = resolve_mix(
            generator.num_ws, spec.get("preset"), spec.get("layers"), spec.get("psi")
        )
        table = mix_table(
            generator,
            targets,
            styles,
            start,
            stop,
            psi,
            truncation=float(p.truncation),
            noise_source=str(p.noise),
            out=ctx.out_dir / name,
        )
        save_image(table, ctx.out_dir / f"{name}.png")
        write_tensorboard_picture(
            Path(ctx.cfg.paths.log_dir) / ctx.stage, tags.samples(name), table
        )
        record = {
            "preset": spec.get("preset"),
            "layers": [start, stop],
            "layers_1based_inclusive": [start + 1, stop],
            "num_ws": generator.num_ws,
            "psi": psi,
            "truncation": float(p.truncation),
            "targets": sorted(targets),
            "styles": sorted(styles),
        }
        atomic_write_json(ctx.out_dir / f"{name}.json", record)
        outputs += [f"{name}.png", f"{name}.json"]
    return outputs


if __name__ == "__main__":
    run_stage("latent_mix", mix_stage)
