"""Score a generator on held-out aligned pairs: L1, PSNR, SSIM and a picture of the result.

With an identity scorer (``src.faces.identity_dlib``) also dlib's identity distance between
each input photo and its output, over the outputs where dlib finds a face, and that share.

The smoke chain uses it against the toy faces' ground truth: their ``paired/A -> paired/B`` is
the true photo -> cartoon mapping, while pix2pix trained on pairs a GAN generated, so this
says how much of the real mapping survived the whole chain.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from src.common.data import PairedImageDataset, PairTransform, pairs_from_folders
from src.common.errors import UserError
from src.common.images import save_image
from src.common.visual import tensor_grid
from src.faces.identity_dlib import DlibIdentity
from src.pix2pix.model import to_unit, triplet_rows

LABELS_FILE = "labels.csv"


def good_pairs(root: str | os.PathLike[str], max_pairs: int) -> list[tuple[Path, Path]]:
    """The first ``max_pairs`` pairs of ``root/A`` + ``root/B``; with a ``labels.csv`` (the toy
    faces' paired set) only those labelled ``good``, since a defect breaks the mapping."""
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"ground_truth.root: folder {folder} does not exist; fix the path")
    pairs = pairs_from_folders(folder)
    labels_path = folder / LABELS_FILE
    if labels_path.is_file():
        with open(labels_path, newline="", encoding="utf-8") as handle:
            bad = {row["id"] for row in csv.DictReader(handle) if row.get("label") != "good"}
        pairs = [pair for pair in pairs if pair[0].stem not in bad]
    return pairs[:max_pairs]


@torch.no_grad()
def evaluate_pairs(
    generator: nn.Module,
    pairs: list[tuple[Path, Path]],
    image_size: int,
    grid_path: str | os.PathLike[str] | None = None,
    grid_samples: int = 8,
    batch_size: int = 8,
    identity: DlibIdentity | None = None,
) -> dict[str, Any]:
    """Mean L1 (in [-1, 1] units), PSNR and SSIM (on [0, 1]) of ``generator`` over ``pairs``,
    each resized to ``image_size``; with ``grid_path`` also a PNG, one pair a row: input |
    output | target; with ``identity`` the identity keys of ``IdentityScores.summary``."""
    if not pairs:
        raise UserError("no pair to evaluate on; check the folder and its labels.csv")
    dataset = PairedImageDataset(
        pairs, PairTransform(image_size, image_size, train=False, interpolation="bicubic")
    )
    loader = DataLoader(dataset, batch_size=batch_size)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    psnr = PeakSignalNoiseRatio(data_range=1.0).to(device)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
    l1_sum, count, rows = 0.0, 0, []
    inputs: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    for batch in loader:
        real_a, real_b = batch["A"].to(device), batch["B"].to(device)
        fake_b = generator(real_a)
        l1_sum += float(F.l1_loss(fake_b, real_b, reduction="sum")) / fake_b[0].numel()
        count += real_a.shape[0]
        psnr.update(to_unit(fake_b), to_unit(real_b))
        ssim.update(to_unit(fake_b), to_unit(real_b))
        if identity is not None:
            inputs += list(to_uint8(real_a))
            outputs += list(to_uint8(fake_b))
        if len(rows) * batch_size < grid_samples:
            rows.append(triplet_rows(real_a, fake_b, real_b))
    generator.train(was_training)
    if grid_path is not None:
        grid = tensor_grid(torch.cat(rows)[: grid_samples * 3], nrow=3)
        save_image(Image.fromarray(grid.permute(1, 2, 0).numpy()), grid_path)
    scores: dict[str, Any] = {
        "pairs": count,
        "l1": l1_sum / count,
        "psnr": float(psnr.compute()),
        "ssim": float(ssim.compute()),
    }
    if identity is not None:
        scores.update(identity.score_pairs(inputs, outputs).summary())
    return scores


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> uint8 N x H x W x 3."""
    unit = to_unit(images).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return np.rint(unit * 255).astype(np.uint8)
