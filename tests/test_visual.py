"""Pictures: the TensorBoard grid and its PNG twin, and contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.common.visual import contact_sheet, log_image_grid, tensor_grid


def test_grid_maps_minus_one_to_one_onto_bytes() -> None:
    images = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0)])
    grid = tensor_grid(images, nrow=2)
    assert grid.dtype == torch.uint8
    assert grid.shape == (3, 8, 14)  # make_grid pads 2 px around and between
    assert grid[:, 3, 3].tolist() == [0, 0, 0] and grid[:, 3, 9].tolist() == [255, 255, 255]


def test_log_image_grid_writes_tensorboard_and_the_same_png(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=tmp_path / "tb", name="stage")
    images = torch.linspace(-1, 1, 4 * 3 * 8 * 8).reshape(4, 3, 8, 8)
    png = log_image_grid(logger, "samples/fake", images, step=7, png_dir=tmp_path / "png", nrow=2)
    logger.experiment.flush()
    assert png == tmp_path / "png" / "fake_000007.png"
    picture = np.asarray(Image.open(png))
    assert picture.shape == (22, 22, 3)  # 2 x 8 px plus 3 x 2 px padding
    assert np.array_equal(picture, tensor_grid(images, nrow=2).permute(1, 2, 0).numpy())
    events = EventAccumulator(str(Path(logger.log_dir))).Reload()
    logged = events.Images("samples/fake")
    assert [(e.step, e.width, e.height) for e in logged] == [(7, 22, 22)]


def test_contact_sheet_layout_and_captions() -> None:
    tiles = [Image.new("RGB", (10, 6), (255, 0, 0)) for _ in range(5)]
    sheet = contact_sheet(tiles, columns=2, padding=1)
    assert sheet.size == (2 * 10 + 3, 3 * 6 + 4)
    assert sheet.getpixel((1, 1)) == (255, 0, 0) and sheet.getpixel((0, 0)) == (255, 255, 255)
    assert sheet.getpixel((12 + 5, 7 + 2 * 7)) == (255, 255, 255)  # sixth cell stays empty
    captioned = contact_sheet(tiles[:2], columns=2, captions=["good", "bad"])
    strip = np.asarray(captioned)[2 + 6 :, :, :]
    assert strip.min() < 128, "captions are drawn in dark ink under the tiles"
