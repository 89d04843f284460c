"""Datasets and Lightning data modules for paired (pix2pix) and unpaired (U-GAT-IT) images.

Images go through ``src.common.images``: files are checked once at ``setup`` and a file that
goes bad later is replaced by the next item with a warning, so an epoch never crashes on one
file. Tensors are CHW float32 in [-1, 1].
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from src.common.errors import UserError
from src.common.fileio import atomic_open
from src.common.images import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    ImageLoadReport,
    list_images,
    load_image,
    scan_images,
)

logger = logging.getLogger(__name__)

MAX_SUBSTITUTIONS = 10
"""How many following items a dataset tries when an item's files turn out to be bad."""

MANIFEST_COLUMNS = ("a", "b")
_EXAMPLES_SHOWN = 3

T = TypeVar("T")


# Resize filters: the pix2pix / CycleGAN reference resizes bicubic (base_dataset.get_transform),
# U-GAT-IT and photo2cartoon bilinear (torchvision's Resize default).
INTERPOLATIONS = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
}


def _image_transform(
    load_size: int, crop_size: int, *, flip: bool, train: bool, interpolation: str = "bilinear"
) -> v2.Compose:
    """Square resize, random (train) or center crop, optional flip, then floats in [-1, 1].

    Resizing, cropping and flipping act on the PIL images, so the resize is PIL's filter as in
    the reference projects, not torch's approximation of it.
    """
    if not 0 < crop_size <= load_size:
        raise ValueError(f"need 0 < crop_size <= load_size, got {crop_size} and {load_size}")
    if interpolation not in INTERPOLATIONS:
        raise UserError(
            f"interpolation: unknown '{interpolation}'; use one of {', '.join(INTERPOLATIONS)}"
        )
    steps: list[Any] = [
        v2.Resize((load_size, load_size), INTERPOLATIONS[interpolation], antialias=True),
        v2.RandomCrop(crop_size) if train else v2.CenterCrop(crop_size),
    ]
    if flip and train:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


class PairTransform:
    """The same random crop and flip for both images of a pair, drawn from torch's global RNG.

    Resizing to a square ``load_size`` (as pix2pix does) also gives A and B the same size,
    which the shared crop needs.
    """

    def __init__(
        self,
        load_size: int,
        crop_size: int,
        *,
        flip: bool = True,
        train: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        self.transform = _image_transform(
            load_size, crop_size, flip=flip, train=train, interpolation=interpolation
        )

    def __call__(
        self, image_a: Image.Image, image_b: Image.Image
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tensor_a, tensor_b = self.transform(image_a, image_b)
        return tensor_a, tensor_b


class SingleTransform:
    """``PairTransform`` for a single image."""

    def __init__(
        self,
        load_size: int,
        crop_size: int,
        *,
        flip: bool = True,
        train: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        self.transform = _image_transform(
            load_size, crop_size, flip=flip, train=train, interpolation=interpolation
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)


def _load_with_substitution(index: int, size: int, load: Callable[[int], T]) -> T:
    """``load(index)``, or the first following item that loads; one warning per bad file met.

    Deterministic (the next index, wrapping around), so a rerun sees the same substitutes.
    """
    for offset in range(MAX_SUBSTITUTIONS):
        candidate = (index + offset) % size
        try:
            return load(candidate)
        except BadImageError as exc:
            logger.warning("%s; using item %d instead of %d", exc, (candidate + 1) % size, index)
    raise UserError(
        f"{MAX_SUBSTITUTIONS} items in a row from item {index} have bad image files; "
        "check the folder (validate=True checks every file at setup) and restart"
    )


class PairedImageDataset(Dataset):
    """Aligned (A, B) image pairs as ``{"A": tensor, "B": tensor, "name": stem of A}``."""

    def __init__(
        self,
        pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
        transform: Callable[[Image.Image, Image.Image], tuple[torch.Tensor, torch.Tensor]],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _load_with_substitution(index, len(self.pairs), self._load)

    def _load(self, index: int) -> dict[str, Any]:
        path_a, path_b = self.pairs[index]
        image_a = load_image(path_a, self.max_pixels)
        image_b = load_image(path_b, self.max_pixels)
        tensor_a, tensor_b = self.transform(image_a, image_b)
        return {"A": tensor_a, "B": tensor_b, "name": path_a.stem}


class UnpairedImageDataset(Dataset):
    """Two unrelated image sets; item ``i`` is A[i % |A|] with a B picked as follows.

    ``serial``: B[i % |B|]. Otherwise, with ``seed=None``, a fresh random B on every access,
    drawn from torch's global RNG (reproducible under ``torch.manual_seed``, different each
    epoch: training). With an integer ``seed``, a random B fixed per item by (seed, i), the
    same every epoch (validation, so sample grids stay comparable).
    """

    def __init__(
        self,
        paths_a: Sequence[str | os.PathLike[str]],
        paths_b: Sequence[str | os.PathLike[str]],
        transform: Callable[[Image.Image], torch.Tensor],
        serial: bool = False,
        seed: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not paths_a or not paths_b:
            raise ValueError(f"need images on both sides, got {len(paths_a)} A, {len(paths_b)} B")
        self.paths_a = [Path(p) for p in paths_a]
        self.paths_b = [Path(p) for p in paths_b]
        self.transform = transform
        self.serial = serial
        self.max_pixels = max_pixels
        self.fixed_b: list[int] | None = None
        if not serial and seed is not None:
            generator = torch.Generator().manual_seed(seed)
            self.fixed_b = torch.randint(
                len(self.paths_b), (len(self),), generator=generator
            ).tolist()

    def __len__(self) -> int:
        return max(len(self.paths_a), len(self.paths_b))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _load_with_substitution(index, len(self), self._load)

    def _index_b(self, index: int) -> int:
        if self.serial:
            return index % len(self.paths_b)
        if self.fixed_b is not None:
            return self.fixed_b[index]
        return int(torch.randint(len(self.paths_b), ()).item())

    def _load(self, index: int) -> dict[str, Any]:
        path_a = self.paths_a[index % len(self.paths_a)]
        path_b = self.paths_b[self._index_b(index)]
        image_a = self.transform(load_image(path_a, self.max_pixels))
        image_b = self.transform(load_image(path_b, self.max_pixels))
        return {"A": image_a, "B": image_b, "name_a": path_a.stem, "name_b": path_b.stem}


def _by_stem(paths: list[Path], folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            raise UserError(
                f"{folder}: {by_stem[path.stem].name} and {path.name} share the name "
                f"{path.stem!r}, so the pairing is ambiguous; keep one of them"
            )
        by_stem[path.stem] = path
    return by_stem


def pairs_from_folders(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pairs ``root/A/x.*`` with ``root/B/x.*`` by file name without extension, sorted by name.

    Files without a partner are left out with one warning; no pair at all is a ``UserError``.
    """
    root = Path(root)
    a_by_stem = _by_stem(list_images(root / "A"), root / "A")
    b_by_stem = _by_stem(list_images(root / "B"), root / "B")
    matched = sorted(a_by_stem.keys() & b_by_stem.keys())
    if not matched:
        raise UserError(
            f"{root}: no file in A/ has a partner of the same name in B/ ({len(a_by_stem)} in A, "
            f"{len(b_by_stem)} in B); pairs are matched by file name without extension"
        )
    only_a = sorted(a_by_stem.keys() - b_by_stem.keys())
    only_b = sorted(b_by_stem.keys() - a_by_stem.keys())
    if only_a or only_b:
        logger.warning(
            "%s: %d files in A/ have no partner in B/ (e.g. %s) and %d in B/ none in A/ "
            "(e.g. %s); using the %d matched pairs",
            root,
            len(only_a),
            ", ".join(only_a[:_EXAMPLES_SHOWN]) or "-",
            len(only_b),
            ", ".join(only_b[:_EXAMPLES_SHOWN]) or "-",
            len(matched),
        )
    return [(a_by_stem[stem], b_by_stem[stem]) for stem in matched]


@dataclass
class Manifest:
    """The rows of a pairs manifest: the (A, B) paths and any other columns, as text."""

    pairs: list[tuple[Path, Path]]
    extra_columns: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)


def read_jsonl_manifest(path: Path) -> Manifest:
    """Read a JSON-lines manifest (dataset_gen's ``manifest.jsonl``, the cleaner's filtered one).

    Each row is an object with ``a`` and ``b`` paths relative to the manifest's folder; rows
    with ``"kept": false`` (pairs the cleaner rejected) are left out. Other keys become columns.
    """
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise UserError(f"{path}, line {line_number}: not JSON ({exc})") from None
                if not isinstance(row, dict) or not row.get("a") or not row.get("b"):
                    raise UserError(
                        f"{path}, line {line_number}: a row needs non-empty 'a' and 'b' paths"
                    )
                if row.get("kept", True):
                    rows.append(row)
    except OSError as exc:
        raise UserError(f"{path}: cannot read manifest ({exc.strerror})") from exc
    extra_names = sorted({key for row in rows for key in row} - set(MANIFEST_COLUMNS))
    return Manifest(
        pairs=[(path.parent / row["a"], path.parent / row["b"]) for row in rows],
        extra_columns={name: [str(row.get(name, "")) for row in rows] for name in extra_names},
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a CSV manifest with columns ``a,b`` (and any others), paths relative to its folder.

    A ``.jsonl`` file is read with :func:`read_jsonl_manifest`. Absolute paths are kept as they
    are.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl_manifest(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            missing = [name for name in MANIFEST_COLUMNS if name not in header]
            if missing:
                raise UserError(
                    f"{path}: missing column(s) {', '.join(missing)}; a manifest needs a header "
                    f"row with columns {','.join(MANIFEST_COLUMNS)} (found: {','.join(header)})"
                )
            extra_names = [name for name in header if name not in MANIFEST_COLUMNS]
            manifest = Manifest(pairs=[], extra_columns={name: [] for name in extra_names})
            for row in reader:
                if not row["a"] or not row["b"]:
                    raise UserError(f"{path}, line {reader.line_num}: empty a or b path")
                manifest.pairs.append((path.parent / row["a"], path.parent / row["b"]))
                for name in extra_names:
                    manifest.extra_columns[name].append(row[name] or "")
    except OSError as exc:
        raise UserError(f"{path}: cannot read manifest ({exc.strerror})") from exc
    return manifest


def write_manifest(
    path: str | os.PathLike[str],
    pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write ``pairs`` (and extra per-row columns) as a CSV manifest, atomically.

    Paths are stored relative to the manifest's folder so the dataset can be moved as a whole.
    """
    target = Path(path)
    extra = dict(extra_columns or {})
    for name, values in extra.items():
        if name in MANIFEST_COLUMNS:
            raise ValueError(f"extra column {name!r} clashes with the path columns")
        if len(values) != len(pairs):
            raise ValueError(
                f"extra column {name!r} has {len(values)} values for {len(pairs)} pairs"
            )
    base = target.parent.absolute()
    with atomic_open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*MANIFEST_COLUMNS, *extra])
        for row, (path_a, path_b) in enumerate(pairs):
            writer.writerow(
                [
                    _relative_to(path_a, base),
                    _relative_to(path_b, base),
                    *(values[row] for values in extra.values()),
                ]
            )
    return target


def _relative_to(path: str | os.PathLike[str], base: Path) -> str:
    return Path(os.path.relpath(Path(path).absolute(), base)).as_posix()


def unpaired_from_root(
    root: str | os.PathLike[str], split: str = "train"
) -> tuple[list[Path], list[Path]]:
    """The images of ``root/{split}A`` and ``root/{split}B`` (U-GAT-IT's folder layout)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    sides = []
    for side in ("A", "B"):
        folder = Path(root) / f"{split}{side}"
        paths = list_images(folder)
        if not paths:
            raise UserError(f"{folder}: no images found; add some or fix the path")
        sides.append(paths)
    return sides[0], sides[1]


def _split(items: list[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded random (train, val) split, each kept in the original order."""
    val_count = max(1, round(len(items) * val_fraction)) if val_fraction > 0 else 0
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    val_indices = set(order[:val_count])
    train = [item for i, item in enumerate(items) if i not in val_indices]
    val = [item for i, item in enumerate(items) if i in val_indices]
    return train, val


class _ImageDataModule(L.LightningDataModule):
    """Config checks, the setup-time scan and the loaders shared by both data modules."""

    def __init__(
        self,
        *,
        load_size: int,
        crop_size: int,
        flip: bool,
        batch_size: int,
        num_workers: int,
        val_fraction: float,
        validate: bool,
        max_pixels: int,
        seed: int,
        interpolation: str,
    ) -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise UserError(
                f"interpolation: unknown '{interpolation}'; use one of {', '.join(INTERPOLATIONS)}"
            )
        if load_size < 1:
            raise UserError(f"load_size must be a positive number of pixels, got {load_size}")
        if not 0 < crop_size <= load_size:
            raise UserError(
                f"crop_size ({crop_size}) must be between 1 and load_size ({load_size}); "
                "lower crop_size or raise load_size"
            )
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"num_workers must be 0 or more, got {num_workers}")
        if not 0 <= val_fraction < 1:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_pixels < 1:
            raise UserError(f"max_pixels must be positive, got {max_pixels}")
        self.load_size = load_size
        self.crop_size = crop_size
        self.flip = flip
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.validate = validate
        self.max_pixels = max_pixels
        self.seed = seed
        self.interpolation = interpolation
        self.scan_report: ImageLoadReport | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _scan(self, paths: list[Path]) -> set[Path]:
        """Decode every file once, log the summary, and return the bad ones."""
        self.scan_report = ImageLoadReport()
        unique = list(dict.fromkeys(paths))
        good = scan_images(
            unique, self.scan_report, self.max_pixels, progress=rank_zero_only.rank == 0
        )
        rank_zero_info(f"{type(self).__name__}: {self.scan_report.summary()}")
        return set(unique) - set(good)

    def _check_train_size(self, size: int, what: str) -> None:
        if size < self.batch_size:
            raise UserError(
                f"batch_size ({self.batch_size}) is larger than the {size} training {what} "
                "left, so training would see no batch; add images or lower batch_size"
            )

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the loaders")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list[Any]:
        """The validation loader, or an empty list (no validation) when ``val_fraction`` is 0."""
        if self.train_set is not None and self.val_set is None:
            return []
        return self._loader(self.val_set, train=False)


class PairedDataModule(_ImageDataModule):
    """Aligned pairs from ``root/A`` + ``root/B`` or from a CSV ``manifest``, for pix2pix.

    ``val_fraction`` of the pairs (a permutation seeded by ``seed``) are kept for validation.
    With ``validate`` every file is decoded once at setup and pairs with a bad file dropped.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        manifest: str | None = None,
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        batch_size: int = 1,
        num_workers: int = 4,
        val_fraction: float = 0.05,
        validate: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__(
            load_size=load_size,
            crop_size=crop_size,
            flip=flip,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            validate=validate,
            max_pixels=max_pixels,
            seed=seed,
            interpolation=interpolation,
        )
        if (root is None) == (manifest is None):
            raise UserError("set exactly one of root (a folder with A/ and B/) and manifest (CSV)")
        self.root = None if root is None else Path(root)
        self.manifest = None if manifest is None else Path(manifest)

    def _read_pairs(self) -> list[tuple[Path, Path]]:
        if self.root is not None:
            if not self.root.is_dir():
                raise UserError(f"root: folder {self.root} does not exist; fix the path")
            return pairs_from_folders(self.root)
        assert self.manifest is not None
        if not self.manifest.is_file():
            raise UserError(f"manifest: file {self.manifest} does not exist; fix the path")
        return read_manifest(self.manifest).pairs

    def setup(self, stage: str | None = None) -> None:
        """Read, split and (with ``validate``) check the pairs; runs once."""
        if self.train_set is not None:
            return
        pairs = self._read_pairs()
        train_pairs, val_pairs = _split(pairs, self.val_fraction, self.seed)
        if self.validate:
            bad = self._scan([path for pair in pairs for path in pair])
            train_pairs = [p for p in train_pairs if p[0] not in bad and p[1] not in bad]
            val_pairs = [p for p in val_pairs if p[0] not in bad and p[1] not in bad]
        self._check_train_size(len(train_pairs), "pairs")
        if self.val_fraction > 0 and not val_pairs:
            raise UserError(
                f"val_fraction ({self.val_fraction}) left no usable validation pair; "
                "raise it, or set it to 0 to train without validation"
            )
        self.train_set = PairedImageDataset(
            train_pairs,
            PairTransform(
                self.load_size,
                self.crop_size,
                flip=self.flip,
                train=True,
                interpolation=self.interpolation,
            ),
            self.max_pixels,
        )
        if val_pairs:
            # Whole images resized to crop_size, no crop: the reference's test options set
            # load_size = crop_size.
            self.val_set = PairedImageDataset(
                val_pairs,
                PairTransform(
                    self.crop_size, self.crop_size, train=False, interpolation=self.interpolation
                ),
                self.max_pixels,
            )


class UnpairedDataModule(_ImageDataModule):
    """Unpaired images from ``root/trainA`` and ``root/trainB``, for U-GAT-IT.

    Validation uses ``root/testA`` + ``root/testB`` when both exist, else ``val_fraction`` of
    each training folder, resized to ``crop_size`` whole. Validation pairs are fixed by
    ``seed``; training pairs are redrawn.
    """

    def __init__(
        self,
        *,
        root: str,
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        batch_size: int = 1,
        num_workers: int = 4,
        val_fraction: float = 0.05,
        validate: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__(
            load_size=load_size,
            crop_size=crop_size,
            flip=flip,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            validate=validate,
            max_pixels=max_pixels,
            seed=seed,
            interpolation=interpolation,
        )
        self.root = Path(root)

    def setup(self, stage: str | None = None) -> None:
        """List, split and (with ``validate``) check both sides; runs once."""
        if self.train_set is not None:
            return
        if not self.root.is_dir():
            raise UserError(f"root: folder {self.root} does not exist; fix the path")
        train_a, train_b = unpaired_from_root(self.root, "train")
        if (self.root / "testA").is_dir() and (self.root / "testB").is_dir():
            val_a, val_b = unpaired_from_root(self.root, "test")
        else:
            train_a, val_a = _split(train_a, self.val_fraction, self.seed)
            train_b, val_b = _split(train_b, self.val_fraction, self.seed)
        if self.validate:
            bad = self._scan(train_a + train_b + val_a + val_b)
            train_a, train_b, val_a, val_b = (
                [p for p in side if p not in bad] for side in (train_a, train_b, val_a, val_b)
            )
        if not train_a or not train_b:
            side = "trainA" if not train_a else "trainB"
            raise UserError(f"root: {self.root / side} has no usable image left; add some")
        self._check_train_size(max(len(train_a), len(train_b)), "images")
        if (val_a or val_b) and not (val_a and val_b):
            raise UserError(
                f"root: validation under {self.root} has images on one side only "
                f"({len(val_a)} A, {len(val_b)} B); add images or set val_fraction to 0"
            )
        if self.val_fraction > 0 and not val_a:
            raise UserError(
                f"val_fraction ({self.val_fraction}): no usable validation image under "
                f"{self.root}; add testA/ and testB/, or set val_fraction to 0"
            )
        self.train_set = UnpairedImageDataset(
            train_a,
            train_b,
            SingleTransform(
                self.load_size,
                self.crop_size,
                flip=self.flip,
                train=True,
                interpolation=self.interpolation,
            ),
            max_pixels=self.max_pixels,
        )
        if val_a:
            self.val_set = UnpairedImageDataset(
                val_a,
                val_b,
                # Whole images resized to crop_size (U-GAT-IT's test transform), not cropped.
                SingleTransform(
                    self.crop_size, self.crop_size, train=False, interpolation=self.interpolation
                ),
                seed=self.seed,
                max_pixels=self.max_pixels,
            )
