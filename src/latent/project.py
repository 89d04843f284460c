"""``python -m src.latent.project +experiment=...``: project photos into a StyleGAN generator.

For every set of targets (``latent_project.targets``: a folder, or ``{name: folder}``) writes,
per target, into ``<out_dir>/<set>/``: the latents (``<stem>.npz``), the aligned crop
(``<stem>_target.png``), the final render (``<stem>.png``), the optimisation as a GIF
(``<stem>_progress.gif``: target | render at every ``video_every`` steps), and LPIPS / PSNR /
SSIM / identity similarity in ``<stem>.json``; and ``table.png`` per set: original | start
(w_avg or the given latents) | optimised. Loss terms go to TensorBoard per step. A rerun after an
interruption keeps the targets already finished. See ``configs/latent_project/default.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from src.common import tags
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import save_image
from src.common.stage import StageContext, run_stage
from src.common.visual import contact_sheet, enlarge_small, write_tensorboard_picture
from src.latent.io import (
    TARGET_SUFFIX,
    Latents,
    image_tensor,
    latents_in,
    load_generator_network,
    load_latents,
    load_losses,
    load_targets,
    pick_device,
    save_gif,
    save_latents,
    settings_from,
    to_picture,
)
from src.latent.projection import (
    LatentStats,
    ProjectionResult,
    ProjectionSettings,
    for_loss,
    latent_stats,
    noise_buffers,
    project,
)

TABLE = "table.png"
# Each step's record under the tag scheme: its total and lr by name, the loss terms as parts.
PROJECTION_TAGS = {"loss": tags.LOSS, "lr": tags.LR}


def target_sets(targets: Any) -> dict[str, str]:
    """``targets`` as {set name: folder}: one folder is the set ``targets``."""
    if OmegaConf.is_config(targets):
        targets = OmegaConf.to_container(targets, resolve=True)
    if isinstance(targets, str):
        return {"targets": targets}
    if isinstance(targets, dict) and targets:
        return {str(name): str(folder) for name, folder in targets.items()}
    raise UserError("targets: give a folder of photos, or {name: folder, ...}")


def image_metrics(
    image: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_size: int,
    perceptual: nn.Module | None,
    identity: nn.Module | None,
) -> dict[str, Any]:
    """PSNR (dB), SSIM, LPIPS and identity similarity of a render against its target."""
    first, second = ((x[None].float().clamp(-1, 1) + 1) / 2 for x in (image, target))
    metrics: dict[str, Any] = {
        "psnr": float(peak_signal_noise_ratio(first, second, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(first, second, data_range=1.0)),
        "lpips": None,
        "identity_similarity": None,
    }
    with torch.no_grad():
        if perceptual is not None:
            small = [for_loss(x[None].float(), loss_size) for x in (image, target)]
            metrics["lpips"] = float(perceptual(*small)[0])
            metrics["lpips_network"] = perceptual.label
        if identity is not None:
            embeddings = identity(torch.stack([image, target]).float())
            metrics["identity_similarity"] = float((embeddings[0] * embeddings[1]).sum())
            metrics["identity_network"] = identity.label
    return metrics


def progress_frames(result: ProjectionResult, target: torch.Tensor) -> list[Image.Image]:
    """Target | render side by side for every kept step (NVIDIA's ``--save-video`` layout)."""
    return [to_picture(torch.cat([target, frame], dim=2)) for frame in result.frames]


def result_table(rows: list[tuple[str, list[Image.Image]]], header: list[str]) -> Image.Image:
    """One row per target, captioned ``<stem> <column>``."""
    cells = enlarge_small([cell for _, row in rows for cell in row], min_side=128)
    captions = [f"{stem} {column}" for stem, _ in rows for column in header]
    return contact_sheet(cells, columns=len(header), captions=captions)


def start_latents(p: DictConfig, set_name: str) -> dict[str, Path] | None:
    """Latents to start from by stem (``start`` is a folder, or ``{set: folder}``), or None."""
    start = p.start
    if start in (None, "w_avg"):
        return None
    if OmegaConf.is_config(start):
        start = OmegaConf.to_container(start, resolve=True).get(set_name)  # type: ignore[union-attr]
        if start is None:
            return None
    return latents_in(start, "start")


def project_stage(ctx: StageContext) -> list[str]:
    """The stage function: project every target of every set; see the module docstring."""
    from torch.utils.tensorboard import SummaryWriter

    p = ctx.params
    device = pick_device(str(p.device))
    generator = load_generator_network(str(p.network), str(p.network_key), device)
    settings = settings_from(p)
    settings.check()
    perceptual, identity = load_losses(p, settings)
    perceptual = perceptual.to(device) if perceptual is not None else None
    identity = identity.to(device) if identity is not None else None
    if settings.regularize_noise_weight > 0 and not noise_buffers(generator):
        print("latent_project: this generator has no noise inputs (StyleGAN3): no noise term")
    stats = latent_stats(generator, int(p.w_avg_samples))
    stats = LatentStats(stats.w_avg.to(device), stats.w_std)
    size = generator.img_resolution
    outputs: list[str] = []
    log_root = Path(ctx.cfg.paths.log_dir) / ctx.stage

    for set_name, folder in target_sets(p.targets).items():
        out = ctx.out_dir / set_name
        targets = load_targets(folder, size, p)
        starts = start_latents(p, set_name)
        report: dict[str, Any] = {"skipped": targets.skipped, "targets": {}}
        rows = []
        for stem, picture in targets.images.items():
            latents_path, metrics_path = out / f"{stem}.npz", out / f"{stem}.json"
            target = image_tensor(picture, size)
            start = None
            if starts is not None:
                if stem not in starts:
                    raise UserError(f"start: no latents {stem}.npz for target {stem} of {folder}")
                start = load_latents(starts[stem], generator).ws
            if ctx.resume and latents_path.is_file() and metrics_path.is_file():
                done = load_latents(latents_path, generator)
                rows.append((stem, [picture, *render_pair(generator, stats, start, done)]))
                report["targets"][stem] = str(metrics_path.name)
                continue
            save_image(picture, out / f"{stem}{TARGET_SUFFIX}")
            result = run_projection(
                generator,
                target.to(device),
                settings,
                stats=stats,
                perceptual=perceptual,
                identity=identity,
                start=start,
                description=f"{set_name}/{stem}",
                writer=SummaryWriter(log_dir=str(log_root / set_name / stem)),
            )
            save_image(to_picture(result.image), out / f"{stem}.png")
            if result.frames:
                frames = progress_frames(result, target)
                save_gif(frames, out / f"{stem}_progress.gif", int(p.frame_ms))
            metrics = image_metrics(
                result.image.to(device),
                target.to(device),
                loss_size=settings.loss_size,
                perceptual=perceptual,
                identity=identity,
            )
            metrics.update(
                start=image_metrics(
                    result.start_image.to(device),
                    target.to(device),
                    loss_size=settings.loss_size,
                    perceptual=perceptual,
                    identity=identity,
                ),
                steps=settings.num_steps,
                space=settings.space,
                final_loss=result.history[-1],
                noise_term="on" if result.noise else "skipped: no noise inputs (StyleGAN3)",
            )
            save_latents(latents_path, Latents(result.ws, result.noise))
            atomic_write_json(metrics_path, metrics)
            rows.append((stem, [picture, to_picture(result.start_image), to_picture(result.image)]))
            report["targets"][stem] = metrics_path.name
        table = result_table(rows, ["original", "start", "optimised"])
        save_image(table, out / TABLE)
        write_tensorboard_picture(log_root, tags.samples(set_name), table)
        atomic_write_json(out / "report.json", report)
        outputs += [f"{set_name}/{TABLE}", f"{set_name}/report.json"]
    return outputs


def render_pair(
    generator: nn.Module, stats: LatentStats, start: torch.Tensor | None, done: Latents
) -> list[Image.Image]:
    """The start and the finished projection of a target kept from an interrupted run."""
    from src.latent.projection import render

    start_ws = stats.w_avg[None].expand(generator.num_ws, -1) if start is None else start
    return [
        to_picture(render(generator, start_ws[None])[0]),
        to_picture(render(generator, done.ws[None], done.noise)[0]),
    ]


def run_projection(
    generator: nn.Module,
    target: torch.Tensor,
    settings: ProjectionSettings,
    *,
    stats: LatentStats,
    perceptual: nn.Module | None,
    identity: nn.Module | None,
    start: torch.Tensor | None,
    description: str,
    writer: Any,
    identity_reference: torch.Tensor | None = None,
) -> ProjectionResult:
    """:func:`project` with a progress bar and every step's loss terms in TensorBoard."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with writer, Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=settings.num_steps, loss="")

        def on_step(step: int, record: dict[str, float]) -> None:
            for name, value in record.items():
                writer.add_scalar(PROJECTION_TAGS.get(name) or tags.loss(name), value, step)
            bar.update(task, advance=1, loss=f"loss {record['loss']:.4f}")

        return project(
            generator,
            target,
            settings,
            stats=stats,
            perceptual=perceptual,
            identity=identity,
            identity_reference=identity_reference,
            start=start,
            on_step=on_step,
        )


if __name__ == "__main__":
    run_stage("latent_project", project_stage)
