"""Pictures people look at: contact sheets (PNG) and image grids for TensorBoard."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from src.common.images import save_image

if TYPE_CHECKING:
    import torch

CAPTION_HEIGHT = 12


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int,
    *,
    padding: int = 2,
    captions: Sequence[str] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Lay ``images`` out row by row, ``columns`` a row, each cell the size of the largest image.

    ``captions`` (one per image) are written under each cell in a small strip.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(captions)} captions for {len(images)} images")
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images) + (CAPTION_HEIGHT if captions else 0)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * padding, rows * cell_h + (rows + 1) * padding),
        background,
    )
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x = padding + (i % columns) * (cell_w + padding)
        y = padding + (i // columns) * (cell_h + padding)
        sheet.paste(im.convert("RGB"), (x, y))
        if captions:
            draw.text((x + 1, y + im.height), captions[i], fill=(0, 0, 0))
    return sheet


def tensor_grid(
    images: torch.Tensor, nrow: int, value_range: tuple[float, float] = (-1, 1)
) -> torch.Tensor:
    """A uint8 CHW grid of a batch of NCHW images in ``value_range``, laid out by torchvision."""
    import torch
    from torchvision.utils import make_grid

    batch = images.detach().float().cpu()
    grid = make_grid(batch, nrow=nrow, normalize=True, value_range=value_range)
    return (grid * 255).round().clamp(0, 255).to(torch.uint8)


def write_tensorboard_picture(
    log_dir: str | os.PathLike[str], tag: str, picture: Image.Image, step: int = 0
) -> None:
    """Write one PIL picture (a contact sheet, say) to TensorBoard under ``log_dir``.

    For stages that train nothing and so have no Lightning logger.
    """
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")


def log_image_grid(
    logger: Any,
    tag: str,
    images: torch.Tensor,
    step: int,
    png_dir: str | os.PathLike[str] | None,
    *,
    nrow: int = 8,
    value_range: tuple[float, float] = (-1, 1),
) -> Path | None:
    """Log a grid of ``images`` (NCHW) to TensorBoard under ``tag`` and, with ``png_dir``, save the
    same grid as ``<png_dir>/<name>_<step>.png`` so it can be looked at without TensorBoard
    (``name``: the tag without its ``samples/`` prefix, other slashes as underscores)."""
    grid = tensor_grid(images, nrow, value_range)
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(tag, grid, global_step=step)
    if png_dir is None:
        return None
    name = tag.removeprefix("samples/").replace("/", "_")
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    return save_image(picture, Path(png_dir) / f"{name}_{step:06d}.png")


def enlarge_small(images: Sequence[Image.Image], min_side: int = 64) -> list[Image.Image]:
    """``images`` scaled up by a whole factor (nearest neighbour) until the smallest side is at
    least ``min_side``, so tiny samples (smoke runs, 16-32 px) and their captions stay legible."""
    smallest = min(min(im.size) for im in images)
    factor = max(1, -(-min_side // smallest))
    if factor == 1:
        return list(images)
    return [
        im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
        for im in images
    ]
