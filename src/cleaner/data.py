"""The cleaner's images: labelled items, a stratified split, augmentations and balanced batches.

An item is one pair id with the image(s) of the judged side: the cartoon (``B/``), the face
(``A/``) or both, which are transformed with the same random crop, flip and colour change and
put side by side (one image twice as wide), so a pretrained 3-channel backbone still fits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from src.cleaner.labels import CLASSES, SIDE_FOLDERS, ids_for_side, pair_images, read_labels
from src.common.errors import UserError
from src.common.images import ImageLoadReport, list_images, load_image, scan_images

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledItem:
    """One labelled sample: its name, the image file(s) of the judged side, and the label."""

    name: str
    paths: tuple[Path, ...]
    good: bool


def items_from_labels(
    pairs_dir: str | os.PathLike[str], labels_path: str | os.PathLike[str], side: str
) -> list[LabelledItem]:
    """The pairs labelled good or bad in ``labels_path`` (skips left out), sorted by id."""
    labels_path = Path(labels_path)
    if not labels_path.is_file():
        raise UserError(f"labels: file {labels_path} does not exist; label pairs first or fix it")
    images = pair_images(pairs_dir)
    usable = set(ids_for_side(images, side, Path(pairs_dir)))
    labels = {k: v for k, v in read_labels(labels_path).items() if v in CLASSES}
    missing = sorted(set(labels) - usable)
    if missing:
        logger.warning(
            "%s: %d labelled ids have no %s image in %s (e.g. %s); leaving them out",
            labels_path,
            len(missing),
            side,
            pairs_dir,
            ", ".join(missing[:3]),
        )
    folders = SIDE_FOLDERS[side]
    return [
        LabelledItem(pair_id, tuple(images[pair_id][f] for f in folders), label == "good")
        for pair_id, label in sorted(labels.items())
        if pair_id in usable
    ]


def items_from_folders(root: str | os.PathLike[str], side: str) -> list[LabelledItem]:
    """Images sorted into ``root/good`` and ``root/bad``: one image per item (not side=both)."""
    root = Path(root)
    if side == "both":
        raise UserError(
            "side=both needs pairs and a labels file; good/ and bad/ folders hold single images"
        )
    items = []
    for label in CLASSES:
        folder = root / label
        if not folder.is_dir():
            raise UserError(f"folders: {folder} does not exist; make good/ and bad/ in {root}")
        for path in list_images(folder):
            items.append(LabelledItem(f"{label}/{path.stem}", (path,), label == "good"))
    return items


def check_classes(
    items: Sequence[LabelledItem], where: str, minimum: int = 2, next_step: str = ""
) -> None:
    """Both classes need ``minimum`` items for a split and a threshold; else a ``UserError``.

    ``next_step`` (e.g. the labelling command) ends the message.
    """
    good = sum(item.good for item in items)
    bad = len(items) - good
    if good < max(minimum, 2) or bad < max(minimum, 2):
        raise UserError(
            f"{where}: {good} good and {bad} bad samples; label at least {max(minimum, 2)} of "
            f"each (about 300 each works well){next_step}"
        )


def drop_bad_files(items: Sequence[LabelledItem], workers: int = 4) -> list[LabelledItem]:
    """Decode every file once and leave out the items with a broken image (logged)."""
    report = ImageLoadReport()
    paths = list(dict.fromkeys(path for item in items for path in item.paths))
    good = set(scan_images(paths, report, workers=workers, progress=False))
    if report.skipped:
        logger.warning("cleaner data: %s", report.summary())
    return [item for item in items if all(path in good for path in item.paths)]


def stratified_split(
    items: Sequence[LabelledItem], val_fraction: float, seed: int
) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """A seeded split keeping the good/bad ratio: ``val_fraction`` of each class (at least one
    of each) goes to validation. Both parts stay in the input order."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.2)")
    generator = torch.Generator().manual_seed(seed)
    val_indices: set[int] = set()
    for good in (True, False):
        indices = [i for i, item in enumerate(items) if item.good == good]
        count = min(len(indices) - 1, max(1, round(len(indices) * val_fraction)))
        order = torch.randperm(len(indices), generator=generator).tolist()
        val_indices.update(indices[i] for i in order[:count])
    train = [item for i, item in enumerate(items) if i not in val_indices]
    val = [item for i, item in enumerate(items) if i in val_indices]
    return train, val


def build_transform(
    image_size: int,
    *,
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: Sequence[float] = (0.8, 1.0),
    flip: bool = True,
    color_jitter: float = 0.1,
) -> v2.Compose:
    """Square images of ``image_size``; for training a small random crop, a horizontal flip and
    a colour jitter (the same draw for every image passed in one call)."""
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps.append(v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), ratio=(0.9, 1.1)))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            # No hue shift: it costs more than the rest of the pipeline together.
            steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


def to_model_input(images: Sequence[Image.Image], transform: v2.Compose) -> torch.Tensor:
    """The transformed image(s) of one item side by side: C x H x (W * len(images))."""
    tensors = transform(*images) if len(images) > 1 else (transform(images[0]),)
    return torch.cat(list(tensors), dim=-1)


class LabelledImages(Dataset):
    """``{"image": tensor, "target": 1.0 good / 0.0 bad, "index": i}`` per labelled item."""

    def __init__(self, items: Sequence[LabelledItem], transform: v2.Compose) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image = to_model_input([load_image(path) for path in item.paths], self.transform)
        return {"image": image, "target": torch.tensor(float(item.good)), "index": index}


class CleanerDataModule(L.LightningDataModule):
    """Train and val sets of labelled items; training batches are drawn class-balanced."""

    def __init__(
        self,
        train_items: Sequence[LabelledItem],
        val_items: Sequence[LabelledItem],
        *,
        image_size: int,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: dict[str, Any],
        seed: int,
    ) -> None:
        super().__init__()
        if batch_size < 1 or batch_size > len(train_items):
            raise UserError(
                f"batch_size={batch_size} must be between 1 and the {len(train_items)} "
                "training samples; lower it or label more pairs"
            )
        self.train_set = LabelledImages(
            train_items, build_transform(image_size, train=True, mean=mean, std=std, **augment)
        )
        self.val_set = LabelledImages(
            val_items, build_transform(image_size, train=False, mean=mean, std=std)
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def balanced_sampler(self) -> WeightedRandomSampler:
        """Each class drawn equally often, whatever the label counts (seeded)."""
        targets = torch.tensor([item.good for item in self.train_set.items])
        counts = torch.bincount(targets.long(), minlength=2).clamp(min=1).float()
        weights = 1.0 / counts[targets.long()]
        generator = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(weights.double(), len(targets), generator=generator)

    def _loader(self, dataset: Dataset, sampler: WeightedRandomSampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.balanced_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, None)
