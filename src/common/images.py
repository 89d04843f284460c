"""Image IO that survives real folders: odd modes, EXIF rotation, broken files, huge files.

Every stage reads its pictures through ``load_image``, which always returns an 8-bit RGB
image or raises ``BadImageError`` with one of a few reasons. ``scan_images`` checks a whole
dataset once at setup, so a 20,000-image run never dies in the middle on one bad file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import track

from src.common.errors import UserError
from src.common.fileio import atomic_path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

DEFAULT_MAX_PIXELS = 8192 * 8192
"""Refuse images above 8192 x 8192: far beyond any face photo, and 200 MB once decoded."""

SkipReason = Literal["empty", "not_an_image", "truncated", "too_large", "unreadable"]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)

_FIXES = {
    "empty": "the file has no data; copy it again or delete it",
    "not_an_image": "the file is not a picture despite its extension; delete or rename it",
    "truncated": "the data is incomplete or corrupt; copy it again or delete it",
    "too_large": "raise max_pixels if the picture is genuine, else delete it",
    "unreadable": "check the file's permissions and the disk",
}

# Cartoon and photo2cartoon pictures sit on white backgrounds, so transparent areas become
# white rather than Pillow's default black.
_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

# What Pillow's decoders raise on bad data. OSErrors that carry an errno are the operating
# system's (permissions, I/O) and are told apart as "unreadable".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


class BadImageError(UserError):
    """An image file that cannot be used, with ``reason`` one of ``SKIP_REASONS``."""

    def __init__(self, path: str | os.PathLike[str], reason: SkipReason, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {SKIP_REASONS}")
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason} ({detail}); {_FIXES[reason]}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason, self.detail)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image extension (case-insensitive, so ``.JPG`` counts)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder``, skipping hidden files and folders (names starting '.').

    Hidden names also cover the temporary files of atomic writes still in progress.
    Symlinked files are listed; symlinked folders are not entered (no loops). Entries named
    like images that are not files (broken symlinks, and folders when not recursing) are
    listed too, so that loading counts them as skipped with a reason instead of losing them.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(f"{root}: image folder {what}; check the path")
    found: list[Path] = []
    try:
        _collect_images(root, recursive, found)
    except OSError as exc:
        raise UserError(f"{exc.filename}: cannot list folder ({exc.strerror})") from exc
    return sorted(found)


def _collect_images(folder: Path, recursive: bool, found: list[Path]) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False) and recursive:
                _collect_images(Path(entry.path), recursive, found)
            elif is_image_file(entry.name):
                found.append(Path(entry.path))


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image, upright according to its EXIF tag.

    Raises ``BadImageError`` for empty, non-image, truncated, too large (more than
    ``max_pixels`` pixels, or above Pillow's own decompression-bomb limit) or unreadable files.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError(path, "unreadable", f"broken symbolic link to {os.readlink(path)}")
    if path.is_dir():
        raise BadImageError(path, "unreadable", "a folder named like an image")
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty", "0 bytes")
        with open(path, "rb") as handle:
            return _decode(path, handle, max_pixels)
    except OSError as exc:
        raise BadImageError(path, "unreadable", exc.strerror or str(exc)) from exc


def _decode(path: Path, handle: BinaryIO, max_pixels: int) -> Image.Image:
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that. Its warning cannot be
    # silenced per call without racing other threads on the global warning filters, so the
    # limit is lowered to Pillow's instead: whatever Pillow warns about is refused here too.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)
    with _bad_data_means(path, "not_an_image"):
        image = Image.open(handle)
    pixels = image.width * image.height
    if pixels > limit:
        raise BadImageError(path, "too_large", f"{pixels} pixels, limit {limit}")
    with _bad_data_means(path, "truncated"):
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb(image)


@contextlib.contextmanager
def _bad_data_means(path: Path, reason: SkipReason) -> Iterator[None]:
    """Turn Pillow's errors into ``BadImageError(reason)``; OS errors propagate as they are."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, "too_large", str(exc)) from exc
    except _DECODE_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        if isinstance(exc, UnidentifiedImageError):
            raise BadImageError(path, reason, "Pillow cannot identify the format") from exc
        raise BadImageError(path, reason, str(exc) or type(exc).__name__) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; deep grayscale is scaled (Pillow's convert clips) and alpha goes over white."""
    if image.mode in _HIGH_DEPTH_MODES:
        image = _scale_to_8bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """An ``L`` image from 16-bit, 32-bit integer or float grayscale, scaled rather than clipped.

    16-bit modes map 0..65535 to 0..255 (value / 257). Mode ``I`` holding values in that range
    (Pillow's usual result for 16-bit files) is treated the same; float data in 0..1 is
    multiplied by 255; anything else is stretched from its own minimum and maximum.
    """
    values = np.asarray(image).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode != "F" and low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) * 255.0 / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


@dataclass
class ImageLoadReport:
    """How many images loaded and which were skipped, and why; one warning per skipped file."""

    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_files: list[tuple[Path, str]] = field(default_factory=list)

    def record_skip(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        """Count a skipped file and log one warning naming it and the reason."""
        logger.warning("skipping %s: %s (%s)", path, reason, detail)
        self.skipped[reason] += 1
        self.skipped_files.append((Path(path), reason))

    def summary(self) -> str:
        """One line, e.g. 'loaded 995 images, skipped 5 (truncated 2, empty 1, not_an_image 2)'."""
        noun = "image" if self.loaded == 1 else "images"
        text = f"loaded {self.loaded} {noun}, skipped {sum(self.skipped.values())}"
        if self.skipped:
            text += " (" + ", ".join(f"{r} {n}" for r, n in self.skipped.items()) + ")"
        return text


def iter_images(
    paths: Iterable[str | os.PathLike[str]],
    report: ImageLoadReport | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[Path, Image.Image]]:
    """Yield ``(path, rgb_image)`` for the good files; bad ones are recorded in ``report``."""
    report = ImageLoadReport() if report is None else report
    for path in map(Path, paths):
        try:
            image = load_image(path, max_pixels)
        except BadImageError as exc:
            report.record_skip(exc.path, exc.reason, exc.detail)
            continue
        report.loaded += 1
        yield path, image


def scan_images(
    paths: Iterable[str | os.PathLike[str]],
    report: ImageLoadReport | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: bool = True,
) -> list[Path]:
    """Fully decode every file in ``workers`` threads; return the good paths in input order.

    Pillow releases the GIL while decoding, so threads give a real speed-up. Bad files are
    recorded in ``report`` (and logged) in input order.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    paths = [Path(p) for p in paths]
    report = ImageLoadReport() if report is None else report
    good: list[Path] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = pool.map(_check_image, paths, repeat(max_pixels))
        outcomes = track(
            outcomes,
            total=len(paths),
            description="Checking images",
            console=Console(stderr=True),
            transient=True,
            disable=not progress,
        )
        for path, error in zip(paths, outcomes, strict=True):
            if error is None:
                report.loaded += 1
                good.append(path)
            else:
                report.record_skip(error.path, error.reason, error.detail)
    return good


def _check_image(path: Path, max_pixels: int) -> BadImageError | None:
    try:
        load_image(path, max_pixels)
    except BadImageError as exc:
        return exc
    return None


def save_image(image: Image.Image, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Save ``image`` atomically in the format its extension names; ``kwargs`` go to Pillow."""
    target = Path(path)
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None:
        raise UserError(f"{target}: unknown image extension; use one of .png, .jpg, .webp")
    with atomic_path(target) as tmp:
        image.save(tmp, format=image_format, **kwargs)
    return target
