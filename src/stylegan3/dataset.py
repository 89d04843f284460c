"""Training images for StyleGAN3: one folder of pictures, square at the network's resolution.

Images are read through ``src.common.images`` (bad files are found once at setup and left
out), centre-cropped to a square, resized to ``resolution`` and kept in memory as uint8, since
GAN training revisits every image thousands of times. ``mirror`` doubles the set with x-flips
(item ``i + N`` is item ``i`` flipped), as the official ``--mirror`` option does.

:class:`InfiniteSampler` draws the order: a fresh seeded permutation for every pass, split
between DDP ranks, starting at any position, so a resumed run reads exactly the images the
uninterrupted run would have read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from src.common.errors import UserError
from src.common.images import ImageLoadReport, iter_images, list_images


def square_resize(image: Image.Image, resolution: int) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it to ``resolution``: HWC uint8."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square.convert("RGB"), dtype=np.uint8)


class ImageFolderDataset(Dataset):
    """All images under ``folder`` (recursively) as CHW float32 tensors in [-1, 1]."""

    def __init__(
        self, folder: str | os.PathLike[str], resolution: int, mirror: bool = False
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"data: folder {self.folder} does not exist; set stylegan3.data")
        self.report = ImageLoadReport()
        paths = list_images(self.folder, recursive=True)
        pixels = [square_resize(im, resolution) for _, im in iter_images(paths, self.report)]
        if not pixels:
            raise UserError(f"data: {self.folder} holds no usable image ({self.report.summary()})")
        self.resolution = resolution
        self.mirror = mirror
        self.images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()

    @property
    def num_images(self) -> int:
        """Distinct pictures on disk (without mirrored copies)."""
        return self.images.shape[0]

    def __len__(self) -> int:
        return self.num_images * (2 if self.mirror else 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index % self.num_images]
        if index >= self.num_images:
            image = image.flip(2)
        return image.to(torch.float32) / 127.5 - 1


class InfiniteSampler(Sampler[int]):
    """Endless indices: pass ``k`` is ``randperm(size)`` seeded by ``(seed, k)``; rank ``r`` of
    ``world`` takes every ``world``-th entry of the concatenated passes, skipping its first
    ``start`` entries (``start`` = images this rank already consumed)."""

    def __init__(
        self, size: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0
    ) -> None:
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start = start

    def __iter__(self) -> Iterator[int]:
        position = self.start * self.world + self.rank
        while True:
            cycle, offset = divmod(position, self.size)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            order = torch.randperm(self.size, generator=generator).tolist()
            while offset < self.size:
                yield order[offset]
                offset += self.world
                position += self.world
