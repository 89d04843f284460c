"""Write a toy-face dataset folder: unpaired photo/cartoon domains, a paired set with good/bad
labels, the landmarks of every image and a contact sheet to look at.

Each image depends only on (seed, stream, index), so any number of worker processes, an
interrupted run resumed, or a clean run all give byte-identical files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from src.common.errors import UserError
from src.common.fileio import atomic_write_json, atomic_write_text
from src.common.images import save_image
from src.common.lifecycle import die_with_parent
from src.common.toyfaces.render import (
    LANDMARK_CONVENTION,
    MAX_SIZE,
    MIN_SIZE,
    Defect,
    landmarks,
    make_face,
    photo_defect,
    render,
    sample_face,
)
from src.common.visual import contact_sheet

UNPAIRED_DIRS = ("trainA", "trainB", "testA", "testB")
PAIRED_DIR = "paired"
LABELS_FILE = "labels.csv"
LANDMARKS_FILE = "landmarks.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
META_KEY = "_meta"
"""Key of landmarks.json holding the size, seed and coordinate convention (not an image)."""
PNG_COMPRESS_LEVEL = 1
CHUNK_SIZE = 32
CONTACT_SHEET_PAIRS_PER_ROW = 4


@dataclass(frozen=True)
class _Set:
    """One stream of faces and the folders (with the style) its images go to."""

    stream: str
    count: int
    outputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Chunk:
    """Faces ``start`` to ``stop`` of one set: the unit of work of a worker process."""

    out_dir: str
    seed: int
    size: int
    bad_fraction: float
    stream: str
    start: int
    stop: int
    outputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Record:
    """What a worker reports about one face: its landmarks and its defect, if any."""

    index: int
    landmarks: dict[str, tuple[float, float]]
    defect: Defect | None


def is_bad(index: int, bad_fraction: float) -> bool:
    """Whether paired face ``index`` gets a defect.

    Faces 0..n-1 hold exactly floor(n * bad_fraction + 0.5) bad ones for every n, spread
    evenly, and the answer for one index never depends on n.
    """
    return math.floor((index + 1) * bad_fraction + 0.5) > math.floor(index * bad_fraction + 0.5)


def write_toyfaces(
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    size: int,
    train_count: int,
    test_count: int,
    paired_count: int,
    bad_fraction: float,
    contact_sheet_pairs: int = 16,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> list[str]:
    """Render a toy-face dataset into ``out_dir`` and return its outputs (relative paths).

    trainA/ testA/ hold photos and trainB/ testB/ cartoons of different faces (unpaired domains);
    paired/A and paired/B hold the same faces in both styles, about ``bad_fraction`` of them with
    a defect, listed in paired/labels.csv. landmarks.json maps every image to its landmarks and
    contact_sheet.png shows the first ``contact_sheet_pairs`` paired faces. A bad face's
    landmarks are those of the good face under its defect.

    With ``resume``, images already there are kept (writes are atomic, so they are complete) and
    surplus or half-written files removed; without it, these outputs are removed first. The
    small summaries (labels.csv, landmarks.json, contact_sheet.png) are always rewritten.
    """
    _validate(
        seed,
        size,
        train_count,
        test_count,
        paired_count,
        bad_fraction,
        contact_sheet_pairs,
        workers,
    )
    out = Path(out_dir)
    sets = (
        _Set("trainA", train_count, (("trainA", "photo"),)),
        _Set("trainB", train_count, (("trainB", "cartoon"),)),
        _Set("testA", test_count, (("testA", "photo"),)),
        _Set("testB", test_count, (("testB", "cartoon"),)),
        _Set(
            PAIRED_DIR, paired_count, ((f"{PAIRED_DIR}/A", "photo"), (f"{PAIRED_DIR}/B", "cartoon"))
        ),
    )
    meta = {
        "seed": seed,
        "size": size,
        "bad_fraction": bad_fraction,
        "convention": LANDMARK_CONVENTION,
    }
    outputs = [*UNPAIRED_DIRS, PAIRED_DIR, LANDMARKS_FILE]
    if contact_sheet_pairs > 0:
        outputs.append(CONTACT_SHEET_FILE)
    if resume:
        _check_meta(out, meta)
        _remove_strays(out, sets)
    else:
        _remove_outputs(out)
    for face_set in sets:
        for folder, _ in face_set.outputs:
            (out / folder).mkdir(parents=True, exist_ok=True)

    chunks = [
        _Chunk(
            out_dir=str(out),
            seed=seed,
            size=size,
            bad_fraction=bad_fraction,
            stream=face_set.stream,
            start=start,
            stop=min(start + CHUNK_SIZE, face_set.count),
            outputs=face_set.outputs,
        )
        for face_set in sets
        for start in range(0, face_set.count, CHUNK_SIZE)
    ]
    records = _run_chunks(chunks, workers, progress)

    points: dict[str, object] = {META_KEY: meta}
    for face_set in sets:
        for record in records.get(face_set.stream, []):
            for folder, _ in face_set.outputs:
                points[f"{folder}/{record.index:06d}.png"] = {
                    name: [round(x, 4), round(y, 4)] for name, (x, y) in record.landmarks.items()
                }
    atomic_write_text(out / PAIRED_DIR / LABELS_FILE, _labels_csv(records.get(PAIRED_DIR, [])))
    atomic_write_json(out / LANDMARKS_FILE, points)
    if contact_sheet_pairs > 0:
        save_image(
            _contact_sheet(seed, size, contact_sheet_pairs, bad_fraction), out / CONTACT_SHEET_FILE
        )
    return outputs


def _validate(
    seed: int,
    size: int,
    train_count: int,
    test_count: int,
    paired_count: int,
    bad_fraction: float,
    contact_sheet_pairs: int,
    workers: int,
) -> None:
    """Raise a one-line UserError naming the first bad argument."""
    non_negative = {
        "seed": seed,
        "train_count": train_count,
        "test_count": test_count,
        "paired_count": paired_count,
        "contact_sheet_pairs": contact_sheet_pairs,
    }
    for key, value in non_negative.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{key} must be an integer >= 0, got {value!r}: set {key} to 0 or more")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(
            f"size={size!r} is out of range: set size to an integer in {MIN_SIZE}..{MAX_SIZE}"
        )
    if not (isinstance(bad_fraction, (int, float)) and 0.0 <= bad_fraction <= 1.0):
        raise UserError(f"bad_fraction={bad_fraction!r} is out of range: set bad_fraction to 0..1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(
            f"workers must be an integer >= 1, got {workers!r}: set workers to 1 or more"
        )


def _check_meta(out: Path, meta: dict[str, object]) -> None:
    """Refuse to resume into a folder written with another seed, size or bad_fraction."""
    path = out / LANDMARKS_FILE
    if not path.is_file():
        return
    previous = json.loads(path.read_text(encoding="utf-8")).get(META_KEY, {})
    for key in ("seed", "size", "bad_fraction"):
        if key in previous and previous[key] != meta[key]:
            raise UserError(
                f"{out} holds toy faces with {key}={previous[key]!r}, not {meta[key]!r}: "
                "use another output folder or resume=False to overwrite it"
            )


def _remove_outputs(out: Path) -> None:
    for name in (*UNPAIRED_DIRS, PAIRED_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (LANDMARKS_FILE, CONTACT_SHEET_FILE):
        (out / name).unlink(missing_ok=True)
    for stray in _temporary_files(out):
        stray.unlink(missing_ok=True)


def _remove_strays(out: Path, sets: tuple[_Set, ...]) -> None:
    """Delete what a clean run would not write: half-written temporaries and surplus images."""
    for face_set in sets:
        wanted = {f"{index:06d}.png" for index in range(face_set.count)}
        for folder, _ in face_set.outputs:
            if (out / folder).is_dir():
                for entry in (out / folder).iterdir():
                    if entry.is_file() and entry.name not in wanted:
                        entry.unlink()
    paired = out / PAIRED_DIR
    if paired.is_dir():
        for entry in paired.iterdir():
            if entry.is_file() and entry.name != LABELS_FILE:
                entry.unlink()
    for stray in _temporary_files(out):
        stray.unlink()


def _temporary_files(out: Path) -> Iterator[Path]:
    """Leftovers of ``atomic_path`` for the top-level files (``.<name>.<random>.tmp``)."""
    for name in (LANDMARKS_FILE, CONTACT_SHEET_FILE):
        yield from out.glob(f".{name}.*.tmp")


def _run_chunks(chunks: list[_Chunk], workers: int, progress: bool) -> dict[str, list[_Record]]:
    """Render every chunk (in a process pool when ``workers`` > 1); records by stream, in order."""
    total = sum((c.stop - c.start) * len(c.outputs) for c in chunks)
    done: dict[tuple[str, int], list[_Record]] = {}
    with _progress_bar(total, progress) as advance:
        if workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                done[chunk.stream, chunk.start] = _render_chunk(chunk)
                advance((chunk.stop - chunk.start) * len(chunk.outputs))
        else:
            context = multiprocessing.get_context("spawn")
            processes = min(workers, len(chunks))
            # Workers die with this process, even on kill -9 (and so does the resource tracker
            # they keep alive).
            with ProcessPoolExecutor(
                max_workers=processes,
                mp_context=context,
                initializer=die_with_parent,
                initargs=(signal.SIGKILL, os.getpid()),
            ) as pool:
                futures = {pool.submit(_render_chunk, chunk): chunk for chunk in chunks}
                for future in as_completed(futures):
                    chunk = futures[future]
                    done[chunk.stream, chunk.start] = future.result()
                    advance((chunk.stop - chunk.start) * len(chunk.outputs))
    records: dict[str, list[_Record]] = {}
    for chunk in chunks:
        records.setdefault(chunk.stream, []).extend(done[chunk.stream, chunk.start])
    return records


def _render_chunk(chunk: _Chunk) -> list[_Record]:
    """Write the chunk's images that are not on disk yet; return every face's landmarks."""
    records = []
    for index in range(chunk.start, chunk.stop):
        bad = chunk.stream == PAIRED_DIR and is_bad(index, chunk.bad_fraction)
        params, defect = sample_face(chunk.seed, chunk.stream, index, bad)
        for folder, style in chunk.outputs:
            path = Path(chunk.out_dir, folder, f"{index:06d}.png")
            if not path.exists():
                style_defect = photo_defect(defect) if style == "photo" else defect
                _write_png(render(params, style, chunk.size, style_defect), path)
        records.append(_Record(index, landmarks(params, chunk.size), defect))
    return records


def _write_png(image: np.ndarray, path: Path) -> None:
    save_image(Image.fromarray(image), path, compress_level=PNG_COMPRESS_LEVEL)


def _labels_csv(records: list[_Record]) -> str:
    """paired/labels.csv: one row per paired face, "bad" ones with their defect and target."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "label", "defect", "target"])
    for record in records:
        defect = record.defect
        if defect is None:
            writer.writerow([f"{record.index:06d}", "good", "", ""])
        else:
            writer.writerow([f"{record.index:06d}", "bad", defect.kind, defect.target])
    return text.getvalue()


def _contact_sheet(seed: int, size: int, pairs: int, bad_fraction: float) -> Image.Image:
    """Photo | cartoon of the first ``pairs`` paired faces, captioned "good" or "bad: <kind>"."""
    images, captions = [], []
    for index in range(pairs):
        face = make_face(seed, PAIRED_DIR, index, size, bad=is_bad(index, bad_fraction))
        images += [Image.fromarray(face.photo), Image.fromarray(face.cartoon)]
        captions += [_caption(photo_defect(face.defect)), _caption(face.defect)]
    columns = 2 * min(pairs, CONTACT_SHEET_PAIRS_PER_ROW)
    return contact_sheet(images, columns, captions=captions)


def _caption(defect: Defect | None) -> str:
    return "good" if defect is None else f"bad: {defect.kind}"


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(images)`` driving a rich progress bar, or doing nothing when disabled."""
    if not enabled or total == 0:
        yield lambda images: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("toy faces"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("toy faces", total=total)
        yield lambda images: bar.advance(task, images)
