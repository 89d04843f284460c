"""``python -m src.cyclegan.frames videos=[a.mp4,clips/] out=DIR``: a style dataset from videos.

CycleGAN learns a style from unpaired pictures; for "photos as frames of a cartoon series" the
pictures are frames of the series. This command decodes the videos with PyAV, samples every
N-th frame or a target rate, drops near-duplicates (a frame whose perceptual hash is within a
few bits of the last kept frame of the same video, so a static scene yields one frame),
centre-crops and resizes, splits train/test and writes ``<out>/train<domain>/`` and
``<out>/test<domain>/`` (domain ``B`` by default: put the photos in trainA/testA beside them),
``manifest.jsonl`` (one row per frame: path, split, source video, frame index, timestamp, hash),
``summary.json`` (counts per video, unreadable videos and why) and ``contact_sheet.png``.

A corrupt or unreadable video is reported and skipped. Each finished video is recorded under
``<out>/.parts/``, so an interrupted run continues where it stopped. See
``configs/cyclegan/frames.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from src.common.errors import UserError
from src.common.fileio import atomic_write_json, atomic_write_text
from src.common.images import save_image
from src.common.stage import CONFIG_DIR, fail
from src.common.visual import contact_sheet

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
HASH_KINDS = ("dhash", "phash")
IMAGE_FORMATS = ("png", "jpg")
PARTS_DIR = ".parts"
MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
CONTACT_SHEET = "contact_sheet.png"
SHEET_FRAMES = 48
SHEET_CELL = 96
# Frames a complete video may decode fewer than its header lists (edit lists, B-frame delay).
MISSING_FRAMES_TOLERATED = 2
# Timestamps are compared with this slack so rounding in pts * time_base never skips a frame.
TIME_EPSILON = 1e-6


# --- perceptual hashes -----------------------------------------------------------------------


def dhash(image: Image.Image, hash_size: int = 8) -> int:
    """Difference hash: ``hash_size**2`` bits, each "is this pixel brighter than its right
    neighbour" on a ``(hash_size + 1) x hash_size`` grayscale thumbnail.

    Robust to compression noise, brightness and scale; changes when the picture's layout does.
    """
    small = image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.int16)
    return _bits_to_int(pixels[:, 1:] > pixels[:, :-1])


def _dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``matrix @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix


def phash(image: Image.Image, hash_size: int = 8, oversample: int = 4) -> int:
    """DCT hash: the lowest ``hash_size x hash_size`` frequencies of a grayscale thumbnail
    ``oversample`` times larger, each bit "above the median of those frequencies"."""
    side = hash_size * oversample
    small = image.convert("L").resize((side, side), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float64)
    matrix = _dct_matrix(side)
    low = (matrix @ pixels @ matrix.T)[:hash_size, :hash_size]
    # The DC term is the mean brightness: it would make the median meaningless, so it is left
    # out of the median (its bit stays in, so the hash has exactly hash_size**2 bits).
    return _bits_to_int(low > np.median(low.flatten()[1:]))


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.flatten():
        value = (value << 1) | int(bit)
    return value


def hamming(first: int, second: int) -> int:
    """How many bits two hashes differ in."""
    return (first ^ second).bit_count()


HASHERS = {"dhash": dhash, "phash": phash}


# --- settings, sampling, pictures ------------------------------------------------------------


@dataclass(frozen=True)
class FrameSettings:
    """How frames are chosen and written; see ``configs/cyclegan/frames.yaml``."""

    every_n: int | None = None
    fps: float | None = 1.0
    min_hash_distance: int = 6
    hash_kind: str = "dhash"
    hash_size: int = 8
    crop: bool = True
    size: int | None = 256
    test_fraction: float = 0.1
    domain: str = "B"
    image_format: str = "png"
    jpeg_quality: int = 95
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.every_n is None) == (self.fps is None):
            raise UserError("set exactly one of every_n (keep every N-th frame) and fps")
        if self.every_n is not None and self.every_n < 1:
            raise UserError(f"every_n: must be at least 1, got {self.every_n}")
        if self.fps is not None and not self.fps > 0:
            raise UserError(f"fps: must be above 0, got {self.fps}")
        if self.hash_kind not in HASH_KINDS:
            raise UserError(f"hash: unknown {self.hash_kind!r}; use one of {HASH_KINDS}")
        if not 0 <= self.min_hash_distance <= self.hash_size**2:
            raise UserError(
                f"min_hash_distance: must be 0..{self.hash_size**2} (0 keeps every frame), "
                f"got {self.min_hash_distance}"
            )
        if self.size is not None and self.size < 8:
            raise UserError(f"size: must be at least 8 pixels or null, got {self.size}")
        if not 0 <= self.test_fraction < 1:
            raise UserError(f"test_fraction: must be in [0, 1), got {self.test_fraction}")
        if not re.fullmatch(r"[A-Za-z0-9]+", self.domain):
            raise UserError(f"domain: use letters or digits (A or B), got {self.domain!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise UserError(f"format: unknown {self.image_format!r}; use one of {IMAGE_FORMATS}")

    def fingerprint(self) -> str:
        """A short hash of the settings: a recorded video is reused only under the same one."""
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


class FrameSampler:
    """Decides which decoded frames are sampled: every N-th by index, or at ``fps`` by time.

    At a target rate the first frame is taken and then the first frame at or after each
    multiple of ``1 / fps`` seconds, so a 25 fps video sampled at 2 fps keeps frames 0, 13, 25...
    """

    def __init__(self, every_n: int | None = None, fps: float | None = None) -> None:
        self.every_n = every_n
        self.period = None if fps is None else 1.0 / fps
        self.next_time: float | None = None

    def wants(self, index: int, time: float) -> bool:
        """Whether the frame with this index (from 0) and timestamp (seconds) is sampled."""
        if self.every_n is not None:
            return index % self.every_n == 0
        assert self.period is not None
        if self.next_time is None:
            self.next_time = time
        if time + TIME_EPSILON < self.next_time:
            return False
        steps = math.floor((time - self.next_time + TIME_EPSILON) / self.period) + 1
        self.next_time += steps * self.period
        return True


def prepare_frame(image: Image.Image, crop: bool, size: int | None) -> Image.Image:
    """Centre-crop to a square (``crop``), then resize so the shorter side is ``size``."""
    if crop:
        side = min(image.size)
        left = (image.width - side) // 2
        top = (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if size is not None and min(image.size) != size:
        scale = size / min(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def split_of(name: str, frame_index: int, test_fraction: float, seed: int) -> str:
    """``"test"`` for a seeded, stable ``test_fraction`` of frames, else ``"train"``.

    Decided per frame from a hash, so it needs no second pass and a resumed run agrees.
    """
    digest = hashlib.sha256(f"{seed}:{name}:{frame_index}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


# --- videos ----------------------------------------------------------------------------------


def find_videos(specs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The video files named in ``specs``: files as given, folders searched recursively."""
    if not specs:
        raise UserError("videos: no videos given; set videos=[clip.mp4,...] or a folder")
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in VIDEO_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise UserError(
                    f"videos: folder {path} holds no video file "
                    f"({', '.join(sorted(VIDEO_EXTENSIONS))}); fix the path"
                )
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"videos: {path} does not exist; fix the path")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def video_names(videos: Sequence[Path]) -> list[str]:
    """A short file-name-safe name per video (its stem), made unique with ``-2``, ``-3``..."""
    names: list[str] = []
    used: set[str] = set()
    for video in videos:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", video.stem).strip("._") or "video"
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}-{count}"
        used.add(name)
        names.append(name)
    return names


@dataclass
class VideoResult:
    """What happened to one video: counts, the frames written, and the error if it failed."""

    video: str
    name: str
    decoded: int = 0
    sampled: int = 0
    duplicates: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # True when decoding failed after some frames: those frames are kept.
    partial: bool = False


def _frame_time(frame: av.VideoFrame, index: int, rate: float | None) -> float:
    if frame.time is not None:
        return float(frame.time)
    return index / rate if rate else float(index)


def _decoded_frames(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    yield from container.decode(stream)


class _NoVideoStreamError(Exception):
    pass


def extract_video(
    video: Path,
    name: str,
    out_dir: Path,
    settings: FrameSettings,
    progress: Progress | None = None,
) -> VideoResult:
    """Sample, deduplicate and write one video's frames; errors are recorded, not raised."""
    result = VideoResult(video=str(video), name=name)
    hasher = HASHERS[settings.hash_kind]
    sampler = FrameSampler(settings.every_n, settings.fps)
    last_hash: int | None = None
    task = None
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise _NoVideoStreamError("no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            if progress is not None:
                task = progress.add_task(f"  {name}", total=stream.frames or None)
            for index, frame in enumerate(_decoded_frames(container)):
                result.decoded += 1
                if task is not None:
                    progress.advance(task)
                time = _frame_time(frame, index, rate)
                if not sampler.wants(index, time):
                    continue
                result.sampled += 1
                image = prepare_frame(frame.to_image(), settings.crop, settings.size)
                value = hasher(image, settings.hash_size)
                if last_hash is not None and hamming(value, last_hash) < settings.min_hash_distance:
                    result.duplicates += 1
                    continue
                last_hash = value
                result.rows.append(_write_frame(image, name, index, time, value, out_dir, settings))
            # A file cut at a packet boundary ends without a decoding error; its header (an
            # MP4's moov atom, written first with faststart) still counts every frame.
            if stream.frames and stream.frames - result.decoded > MISSING_FRAMES_TOLERATED:
                result.error = (
                    f"truncated: decoded {result.decoded} of the {stream.frames} frames "
                    "its header lists"
                )
                result.partial = bool(result.rows)
    except (av.FFmpegError, OSError, _NoVideoStreamError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.partial = bool(result.rows)
    finally:
        if task is not None:
            progress.remove_task(task)
    return result


def _write_frame(
    image: Image.Image,
    name: str,
    index: int,
    time: float,
    value: int,
    out_dir: Path,
    settings: FrameSettings,
) -> dict[str, Any]:
    split = split_of(name, index, settings.test_fraction, settings.seed)
    relative = f"{split}{settings.domain}/{name}_f{index:07d}.{settings.image_format}"
    options = {"quality": settings.jpeg_quality} if settings.image_format == "jpg" else {}
    save_image(image, out_dir / relative, **options)
    return {
        "path": relative,
        "split": split,
        "frame": index,
        "time": round(time, 6),
        "hash": f"{value:0{settings.hash_size**2 // 4}x}",
        "width": image.width,
        "height": image.height,
    }


# --- the whole job ---------------------------------------------------------------------------


@dataclass
class FramesSummary:
    """Totals over all videos, the per-video results, and where the outputs are."""

    out_dir: Path
    results: list[VideoResult]

    @property
    def frames(self) -> int:
        """Frames written, all videos together."""
        return sum(len(r.rows) for r in self.results)

    @property
    def failed(self) -> list[VideoResult]:
        """Videos that could not be read (completely or partly)."""
        return [r for r in self.results if r.error is not None]

    def line(self) -> str:
        """One line for the terminal."""
        dup = sum(r.duplicates for r in self.results)
        text = (
            f"wrote {self.frames} frames from {len(self.results) - len(self.failed)} of "
            f"{len(self.results)} videos ({dup} near-duplicates dropped) to {self.out_dir}"
        )
        partial = [Path(r.video).name for r in self.failed if r.partial]
        unreadable = [Path(r.video).name for r in self.failed if not r.partial]
        if partial:
            text += "; partly read (truncated): " + ", ".join(partial)
        if unreadable:
            text += "; unreadable: " + ", ".join(unreadable)
        return text


def _part_path(out_dir: Path, name: str) -> Path:
    return out_dir / PARTS_DIR / f"{name}.json"


def _source_identity(video: Path) -> dict[str, Any]:
    stat = video.stat()
    return {"video": str(video), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _recorded(out_dir: Path, name: str, video: Path, fingerprint: str) -> VideoResult | None:
    """The result a previous run recorded for this video under these settings, if complete."""
    try:
        record = json.loads(_part_path(out_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("settings") != fingerprint or record.get("source") != _source_identity(video):
        return None
    result = VideoResult(**record["result"])
    if not all((out_dir / row["path"]).is_file() for row in result.rows):
        return None
    return result


def _remove_frames_of(out_dir: Path, name: str) -> None:
    """Delete frames an interrupted or differently configured earlier run left for ``name``."""
    pattern = re.compile(rf"{re.escape(name)}_f\d{{7}}\.(png|jpg)")
    for folder in out_dir.iterdir():
        if folder.is_dir() and re.fullmatch(r"(train|test)[A-Za-z0-9]+", folder.name):
            for path in folder.iterdir():
                if pattern.fullmatch(path.name):
                    path.unlink()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def build_frames(
    videos: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: FrameSettings,
    *,
    progress: bool = True,
) -> FramesSummary:
    """Extract frames from every video into ``out_dir`` and write the manifest and summary.

    Videos recorded as finished by an earlier run with the same settings are not decoded again.
    """
    sources = find_videos(videos)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = settings.fingerprint()
    results = []
    with _progress() if progress else _NullProgress() as bar:
        overall = bar.add_task("videos", total=len(sources))
        for video, name in zip(sources, video_names(sources), strict=True):
            result = _recorded(out, name, video, fingerprint)
            if result is None:
                _remove_frames_of(out, name)
                result = extract_video(video, name, out, settings, bar if progress else None)
                atomic_write_json(
                    _part_path(out, name),
                    {
                        "settings": fingerprint,
                        "source": _source_identity(video),
                        "result": asdict(result),
                    },
                )
            if result.error:
                kept = f"kept the {len(result.rows)} frames before" if result.partial else "skipped"
                bar.console.print(f"[yellow]warning[/]: {video}: {result.error}; {kept}")
            results.append(result)
            bar.advance(overall)
    summary = FramesSummary(out, results)
    _write_outputs(summary, settings)
    return summary


class _NullProgress:
    """The ``Progress`` calls ``build_frames`` makes, doing nothing (``progress=False``)."""

    console = Console(stderr=True, quiet=True)

    def __enter__(self) -> _NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any) -> None:
        return None


def _write_outputs(summary: FramesSummary, settings: FrameSettings) -> None:
    out = summary.out_dir
    lines = [
        json.dumps({**row, "video": result.video}, sort_keys=True)
        for result in summary.results
        for row in result.rows
    ]
    atomic_write_text(out / MANIFEST, "".join(line + "\n" for line in lines))
    atomic_write_json(
        out / SUMMARY,
        {
            "settings": asdict(settings),
            "frames": summary.frames,
            "videos": [
                {
                    "video": r.video,
                    "name": r.name,
                    "decoded": r.decoded,
                    "sampled": r.sampled,
                    "duplicates": r.duplicates,
                    "written": len(r.rows),
                    "error": r.error,
                    "partial": r.partial,
                }
                for r in summary.results
            ],
        },
    )
    rows = [(result.name, row) for result in summary.results for row in result.rows]
    if rows:
        shown = rows[:: max(1, len(rows) // SHEET_FRAMES)][:SHEET_FRAMES]
        thumbs = []
        for _, row in shown:
            with Image.open(out / row["path"]) as picture:
                thumbs.append(picture.convert("RGB").resize((SHEET_CELL, SHEET_CELL)))
        captions = [f"{name[:8]} {row['time']:.1f}s" for name, row in shown]
        sheet = contact_sheet(thumbs, columns=8, captions=captions)
        save_image(sheet, out / CONTACT_SHEET)


def settings_from_config(cfg: DictConfig) -> FrameSettings:
    """``FrameSettings`` from the command's config (``configs/cyclegan/frames.yaml``)."""
    return FrameSettings(
        every_n=None if cfg.every_n is None else int(cfg.every_n),
        fps=None if cfg.fps is None or cfg.every_n is not None else float(cfg.fps),
        min_hash_distance=int(cfg.min_hash_distance),
        hash_kind=str(cfg.hash),
        hash_size=int(cfg.hash_size),
        crop=bool(cfg.crop),
        size=None if cfg.size is None else int(cfg.size),
        test_fraction=float(cfg.test_fraction),
        domain=str(cfg.domain),
        image_format=str(cfg.format),
        jpeg_quality=int(cfg.jpeg_quality),
        seed=int(cfg.seed),
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "cyclegan"), config_name="frames")
def main(cfg: DictConfig) -> None:
    """Build the frame dataset and print one line saying what was written."""
    try:
        videos = cfg.videos
        if isinstance(videos, str):
            videos = [videos]
        elif not isinstance(videos, ListConfig):
            raise UserError("videos: give a list, e.g. videos=[a.mp4,clips/]")
        summary = build_frames(
            [str(v) for v in videos],
            cfg.out,
            settings_from_config(cfg),
            progress=bool(cfg.progress),
        )
        if summary.frames == 0:
            raise UserError(
                f"videos: no frame could be read from {len(summary.results)} video(s); "
                f"see {summary.out_dir / SUMMARY}"
            )
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    print(summary.line())


if __name__ == "__main__":
    main()
