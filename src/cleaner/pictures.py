"""Pictures of the cleaner's results: a confusion matrix, a score histogram, captioned sheets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from src.common.visual import contact_sheet

CELL = 96
MARGIN = 70
HISTOGRAM_SIZE = (480, 240)
HISTOGRAM_BINS = 20


def confusion_matrix_picture(matrix: Sequence[Sequence[int]], threshold: float) -> Image.Image:
    """A 2x2 table (rows: true bad, good; columns: predicted bad, good) shaded by row share."""
    picture = Image.new("RGB", (MARGIN + 2 * CELL + 10, MARGIN + 2 * CELL + 24), "white")
    draw = ImageDraw.Draw(picture)
    names = ("bad", "good")
    draw.text((MARGIN, 6), "predicted", fill="black")
    draw.text((4, MARGIN - 14), "true", fill="black")
    for col, name in enumerate(names):
        draw.text((MARGIN + col * CELL + CELL // 3, MARGIN - 28), name, fill="black")
    for row, name in enumerate(names):
        draw.text((8, MARGIN + row * CELL + CELL // 2 - 6), name, fill="black")
        total = max(1, sum(matrix[row]))
        for col in range(2):
            share = matrix[row][col] / total
            shade = int(255 - 180 * share)
            color = (shade, shade, 255) if row == col else (255, shade, shade)
            box = (
                MARGIN + col * CELL,
                MARGIN + row * CELL,
                MARGIN + (col + 1) * CELL - 2,
                MARGIN + (row + 1) * CELL - 2,
            )
            draw.rectangle(box, fill=color, outline="black")
            draw.text((box[0] + CELL // 3, box[1] + CELL // 2 - 6), str(matrix[row][col]), "black")
    draw.text((6, MARGIN + 2 * CELL + 6), f"threshold {threshold:.3f}", fill="black")
    return picture


def score_histogram(scores: Sequence[float], threshold: float) -> Image.Image:
    """Bars of how many pairs got each score (20 bins over 0..1), kept ones green, and the
    threshold as a red line."""
    width, height = HISTOGRAM_SIZE
    left, bottom, top = 40, 24, 16
    picture = Image.new("RGB", HISTOGRAM_SIZE, "white")
    draw = ImageDraw.Draw(picture)
    counts, edges = np.histogram(np.asarray(scores, dtype=np.float64), HISTOGRAM_BINS, (0, 1))
    tallest = max(1, int(counts.max()) if len(counts) else 1)
    plot_w = width - left - 10
    plot_h = height - bottom - top
    bar_w = plot_w / HISTOGRAM_BINS
    for i, count in enumerate(counts):
        x0 = left + i * bar_w
        bar_h = plot_h * count / tallest
        color = (80, 170, 100) if edges[i] >= threshold else (200, 90, 90)
        draw.rectangle((x0 + 1, height - bottom - bar_h, x0 + bar_w - 1, height - bottom), color)
    draw.line((left, height - bottom, width - 10, height - bottom), fill="black")
    draw.line((left, top, left, height - bottom), fill="black")
    line_x = left + plot_w * threshold
    draw.line((line_x, top, line_x, height - bottom), fill=(220, 0, 0), width=2)
    draw.text((2, top - 4), str(tallest), fill="black")
    draw.text((left - 4, height - bottom + 4), "0", fill="black")
    draw.text((width - 18, height - bottom + 4), "1", fill="black")
    draw.text((left + plot_w / 2 - 40, height - bottom + 4), "score P(good)", fill="black")
    label = f"threshold {threshold:.3f}"
    label_x = line_x + 3 if line_x < width - 100 else line_x - 6 * len(label) - 3
    draw.text((label_x, top - 14), label, fill=(220, 0, 0))
    return picture


def captioned_sheet(
    rows: Sequence[Sequence[Image.Image]], captions: Sequence[str], thumbnail: int = 96
) -> Image.Image:
    """One cell per entry of ``rows`` (its images side by side, shrunk to ``thumbnail`` px
    high) with its caption, four cells a row."""
    cells = []
    for images in rows:
        thumbs = [_thumbnail(image, thumbnail) for image in images]
        cell = Image.new("RGB", (sum(t.width for t in thumbs), thumbnail), "white")
        x = 0
        for thumb in thumbs:
            cell.paste(thumb, (x, 0))
            x += thumb.width
        cells.append(cell)
    return contact_sheet(cells, columns=min(4, len(cells)), captions=list(captions))


def _thumbnail(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


def log_picture(logger: Any, tag: str, picture: Image.Image, step: int = 0) -> None:
    """Add ``picture`` to a Lightning logger's TensorBoard, when it has one."""
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")
