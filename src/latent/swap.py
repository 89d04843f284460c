"""``python -m src.latent.swap +experiment=...``: face swap by projection with an identity loss.

Every face A of ``latent_swap.faces`` (a folder of projected latents with their aligned crops,
latent_project's ``<set>/``) is projected again, starting from its own latents (or ``w_avg``),
with the extra term ``identity_weight * (1 - cos(ID(G(w)), ID(B)))`` towards every other face B:
the render keeps A's picture (LPIPS, MSE) and takes B's identity. Writes ``<A>__<B>.png`` /
``.npz`` / ``_progress.gif`` and ``<A>__<B>.json`` (identity similarity to B and to A, before
and after), and ``table.png``: row A, column B, the originals on the diagonal. A rerun after an
interruption keeps the pairs already finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from src.common import tags
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.visual import contact_sheet, enlarge_small, write_tensorboard_picture
from src.latent.io import (
    Latents,
    image_tensor,
    latents_in,
    load_generator_network,
    load_latents,
    load_losses,
    original_picture,
    pick_device,
    save_gif,
    save_latents,
    settings_from,
    to_picture,
)
from src.latent.project import progress_frames, run_projection
from src.latent.projection import LatentStats, latent_stats, render

TABLE = "table.png"
STARTS = ("projected", "w_avg")


def similarity(identity: torch.nn.Module, first: torch.Tensor, second: torch.Tensor) -> float:
    """Cosine similarity of the identity embeddings of two [3, H, W] faces."""
    with torch.no_grad():
        embeddings = identity(torch.stack([first, second]).float())
    return float((embeddings[0] * embeddings[1]).sum())


def swap_stage(ctx: StageContext) -> list[str]:
    """The stage function: every ordered pair of different faces; see the module docstring."""
    from torch.utils.tensorboard import SummaryWriter

    p = ctx.params
    if p.start not in STARTS:
        raise UserError(f"start: {p.start!r}; use one of {', '.join(STARTS)}")
    device = pick_device(str(p.device))
    generator = load_generator_network(str(p.network), str(p.network_key), device)
    settings = settings_from(p)
    settings.check()
    perceptual, identity = load_losses(p, settings, identity_needed=True)
    perceptual = perceptual.to(device) if perceptual is not None else None
    identity = identity.to(device)
    stats = latent_stats(generator, int(p.w_avg_samples))
    stats = LatentStats(stats.w_avg.to(device), stats.w_std)
    size = generator.img_resolution
    files = latents_in(p.faces, "faces")
    faces: dict[str, tuple[torch.Tensor, Latents]] = {}
    for stem, path in files.items():
        latents = load_latents(path, generator)
        picture = original_picture(path)
        image = (
            image_tensor(picture, size)
            if picture is not None
            else render(generator, latents.ws[None], latents.noise)[0].cpu()
        )
        faces[stem] = (image, latents)
    if len(faces) < 2:
        raise UserError(f"faces: {p.faces} has {len(faces)} face; a swap needs two or more")

    out = ctx.out_dir
    log_root = Path(ctx.cfg.paths.log_dir) / ctx.stage
    cells: list[Image.Image] = []
    captions: list[str] = []
    for a, (image_a, latents_a) in faces.items():
        for b, (image_b, _) in faces.items():
            captions.append(a if a == b else f"{a} as {b}")
            if a == b:
                cells.append(to_picture(image_a))
                continue
            name = f"{a}__{b}"
            if ctx.resume and (out / f"{name}.json").is_file():
                done = load_latents(out / f"{name}.npz", generator)
                cells.append(to_picture(render(generator, done.ws[None], done.noise)[0]))
                continue
            reference = identity(image_b[None].to(device))[0]
            result = run_projection(
                generator,
                image_a.to(device),
                settings,
                stats=stats,
                perceptual=perceptual,
                identity=identity,
                identity_reference=reference,
                start=latents_a.ws if p.start == "projected" else None,
                description=f"{a} as {b}",
                writer=SummaryWriter(log_dir=str(log_root / name)),
            )
            picture = to_picture(result.image)
            save_image(picture, out / f"{name}.png")
            if result.frames:
                gif = progress_frames(result, image_a)
                save_gif(gif, out / f"{name}_progress.gif", int(p.frame_ms))
            save_latents(out / f"{name}.npz", Latents(result.ws, result.noise))
            image_dev = result.image.to(device)
            start_dev = result.start_image.to(device)
            record: dict[str, Any] = {
                "target": a,
                "identity_from": b,
                "identity_network": identity.label,
                "similarity_to_identity_start": similarity(identity, start_dev, image_b.to(device)),
                "similarity_to_identity": similarity(identity, image_dev, image_b.to(device)),
                "similarity_to_target": similarity(identity, image_dev, image_a.to(device)),
                "final_loss": result.history[-1],
                "steps": settings.num_steps,
            }
            atomic_write_json(out / f"{name}.json", record)
            cells.append(picture)
    table = contact_sheet(enlarge_small(cells, 128), columns=len(faces), captions=captions)
    save_image(table, out / TABLE)
    write_tensorboard_picture(log_root, tags.samples("table"), table)
    return [TABLE]


if __name__ == "__main__":
    run_stage("latent_swap", swap_stage)
