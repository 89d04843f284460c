"""``python -m src.blend +experiment=...``: blend a real-face and a cartoon StyleGAN generator
(StyleGAN3, or StyleGAN2 by blocks ``b4`` .. ``b{res}``).

Writes ``network-blended.pt`` (our StyleGAN3 checkpoint format, with the blend recorded under
``blend``) and ``preview.png`` (base | blended | tuned for a few seeds, also in TensorBoard).
See ``configs/blend/default.yaml`` and ``src/blend/blending.py`` for the rule and policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console
from rich.table import Table

from src.blend.blending import (
    BlendLayer,
    blend_generators,
    check_same_family,
    resolve_weights,
    synthesis_layers,
)
from src.common import tags
from src.common.checkpoint import save_checkpoint
from src.common.errors import UserError
from src.common.fileio import sha256_file
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.visual import contact_sheet, enlarge_small, write_tensorboard_picture
from src.stylegan3.generate import latents_for, parse_seeds, to_pil
from src.stylegan3.legacy import load_networks, to_checkpoint
from src.stylegan3.networks import noise_kwargs

CHECKPOINT = "network-blended.pt"
PREVIEW = "preview.png"
BLENDED_NETWORKS = ("G", "G_ema")


def preview_sheet(
    base: torch.nn.Module,
    blended: torch.nn.Module,
    tuned: torch.nn.Module,
    seeds: list[int],
    psi: float,
) -> Image.Image:
    """Rows of base | blended | tuned, one per seed, all from the blended generator's ``w``."""
    z = latents_for(seeds, blended.z_dim).float()
    with torch.no_grad():
        ws = blended.mapping(z, None, truncation_psi=psi)
        columns = [
            to_pil(net.synthesis(ws, **noise_kwargs(net, "const")))
            for net in (base, blended, tuned)
        ]
    cells = [picture for row in zip(*columns, strict=True) for picture in row]
    captions = [f"{kind} {seed}" for seed in seeds for kind in ("base", "blend", "tuned")]
    return contact_sheet(enlarge_small(cells), columns=3, captions=captions)


def print_weights(layers: list[BlendLayer], weights: list[float]) -> None:
    """A table of every synthesis layer with its resolution and blend weight."""
    table = Table(title="blend weights (0 = base, 1 = tuned)")
    for column in ("layer", "resolution", "weight"):
        table.add_column(column, justify="right")
    for layer, weight in zip(layers, weights, strict=True):
        table.add_row(layer.name, str(layer.resolution), f"{weight:.3f}")
    Console(stderr=True).print(table)


def blend(ctx: StageContext) -> list[str]:
    """The stage function: load both generators, blend G and G_ema, save them and a preview."""
    p = ctx.params
    base_path, tuned_path = Path(p.base), Path(p.tuned)
    base, tuned = load_networks(base_path), load_networks(tuned_path)
    for networks, path in ((base, base_path), (tuned, tuned_path)):
        if networks["G_ema"].c_dim:
            raise UserError(f"{path} is a conditional generator; blend needs unconditional ones")
    check_same_family(base["G_ema"], tuned["G_ema"])
    layers = synthesis_layers(base["G_ema"])
    spec = OmegaConf.to_container(p.weights) if OmegaConf.is_config(p.weights) else p.weights
    weights = resolve_weights(spec, layers, p.input_layer)
    print_weights(layers, weights)
    result: dict[str, Any] = {
        "configs": {**base["configs"], "D": tuned["configs"]["D"]},
        "D": tuned["D"],
        "augment_pipe": tuned["augment_pipe"],
        "training_set_kwargs": tuned["training_set_kwargs"],
    }
    for kind in BLENDED_NETWORKS:
        result[kind] = blend_generators(
            base[kind], tuned[kind], weights, mapping_from=p.mapping_from, affine=p.affine
        )
    checkpoint = to_checkpoint(result, f"blend of {base_path} and {tuned_path}")
    checkpoint["blend"] = {
        "base": str(base_path),
        "tuned": str(tuned_path),
        "base_sha256": sha256_file(base_path),
        "tuned_sha256": sha256_file(tuned_path),
        "layers": [layer.name for layer in layers],
        "weights": weights,
        "mapping_from": str(p.mapping_from),
        "affine": str(p.affine),
        "input_layer": str(p.input_layer),
    }
    save_checkpoint(checkpoint, ctx.out_dir / CHECKPOINT)

    seeds = parse_seeds(p.preview_seeds)
    sheet = preview_sheet(
        base["G_ema"].eval(),
        result["G_ema"].eval(),
        tuned["G_ema"].eval(),
        seeds,
        float(p.preview_psi),
    )
    save_image(sheet, ctx.out_dir / PREVIEW)
    write_tensorboard_picture(
        Path(ctx.cfg.paths.log_dir) / ctx.stage, tags.samples("preview"), sheet
    )
    return [CHECKPOINT, PREVIEW]


if __name__ == "__main__":
    run_stage("blend", blend)
