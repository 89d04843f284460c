"""Good/bad labels: the append-only labels file the labelling page writes and training reads.

The file is a CSV with the columns ``id,label,time``: one row per keypress, appended, flushed
and fsynced as it is given, so a crash loses at most the key being pressed. ``label`` is
``good``, ``bad``, ``skip`` or ``undo``. An undo never rewrites the file: it appends an ``undo``
row naming the pair whose label it takes back, and readers replay the rows in order. Other
label files with ``id`` and ``label`` columns (the toy faces' ``paired/labels.csv``) read the
same way. Which image an id names is decided by the side (cartoon, face or both) and the pairs
folder: ``A/<id>.*`` is the face, ``B/<id>.*`` the cartoon.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from src.common.errors import UserError
from src.common.images import list_images

LABEL_COLUMNS = ("id", "label", "time")
CLASSES = ("good", "bad")
DECISIONS = (*CLASSES, "skip")
UNDO = "undo"
SIDES = ("cartoon", "face", "both")
SIDE_FOLDERS = {"face": ("A",), "cartoon": ("B",), "both": ("A", "B")}
"""The folders of a pairs folder whose images the classifier judges, per side."""


@dataclass(frozen=True)
class LabelEvent:
    """One decision about one pair, as written in the labels file."""

    pair_id: str
    label: str
    time: str


def check_side(side: str) -> str:
    """``side`` if it is one of ``SIDES``, else a one-line ``UserError``."""
    if side not in SIDES:
        raise UserError(f"side={side!r} is not known: set side to one of {', '.join(SIDES)}")
    return side


def replay(events: list[LabelEvent]) -> list[LabelEvent]:
    """The decisions still in force after the undo rows: each undo removes the latest decision
    about its pair (normally the latest decision of all)."""
    active: list[LabelEvent] = []
    for event in events:
        if event.label != UNDO:
            active.append(event)
            continue
        for position in range(len(active) - 1, -1, -1):
            if active[position].pair_id == event.pair_id:
                del active[position]
                break
    return active


def read_label_events(path: str | os.PathLike[str]) -> list[LabelEvent]:
    """Every row of a labels file in order; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{path}: cannot read labels ({exc.strerror})") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if "id" not in header or "label" not in header:
        raise UserError(
            f"{path}: a labels file needs a header with the columns id and label "
            f"(found: {','.join(header) or 'nothing'}); fix the file or point labels= elsewhere"
        )
    events = []
    for row in reader:
        label = (row["label"] or "").strip()
        if label not in (*DECISIONS, UNDO):
            raise UserError(
                f"{path}, line {reader.line_num}: label {label!r} is not one of "
                f"{', '.join((*DECISIONS, UNDO))}; fix or remove that line"
            )
        events.append(LabelEvent((row["id"] or "").strip(), label, (row.get("time") or "")))
    return events


def read_labels(path: str | os.PathLike[str]) -> dict[str, str]:
    """The label in force for every pair id: the last ``good``/``bad``/``skip`` not undone."""
    return {event.pair_id: event.label for event in replay(read_label_events(path))}


class LabelLog:
    """The labels file of a labelling session: durable appends and the replayed state."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.events = read_label_events(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_tail()
            self._handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
            if self.path.stat().st_size == 0:
                self._write_row(LABEL_COLUMNS)
        except OSError as exc:
            raise UserError(
                f"labels={self.path}: cannot write ({exc.strerror}); make the file and its "
                "folder writable, or point labels= at another file"
            ) from None
        self.active = replay(self.events)

    def _repair_tail(self) -> None:
        """End the file with a newline, so an append after a torn last write starts a new row."""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")

    def _write_row(self, row: tuple[str, ...]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(row)
        self._handle.write(text.getvalue())
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def append(self, pair_id: str, label: str) -> LabelEvent:
        """Write one decision (or ``undo``) to disk, then apply it to the state."""
        if label not in (*DECISIONS, UNDO):
            raise ValueError(f"unknown label {label!r}")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = LabelEvent(pair_id, label, stamp)
        self._write_row((event.pair_id, event.label, event.time))
        self.events.append(event)
        self.active = replay(self.events)
        return event

    def undo(self) -> LabelEvent | None:
        """Take back the latest decision still in force; None when there is none."""
        if not self.active:
            return None
        last = self.active[-1]
        self.append(last.pair_id, UNDO)
        return last

    def decided(self) -> dict[str, str]:
        """The label in force per pair id."""
        return {event.pair_id: event.label for event in self.active}

    def counts(self) -> Counter[str]:
        """How many pairs are good, bad and skipped now."""
        return Counter(self.decided().values())

    def close(self) -> None:
        """Close the file (every row is already on disk)."""
        self._handle.close()


def pair_images(pairs_dir: str | os.PathLike[str]) -> dict[str, dict[str, Path]]:
    """The images of a pairs folder by id (file name without extension): ``{id: {"A": path,
    "B": path}}``, with only the sides that exist for that id."""
    root = Path(pairs_dir)
    if not root.is_dir():
        raise UserError(
            f"pairs: folder {root} does not exist; point pairs= at a folder with A/, B/"
        )
    found: dict[str, dict[str, Path]] = {}
    for folder in ("A", "B"):
        if (root / folder).is_dir():
            for path in list_images(root / folder):
                found.setdefault(path.stem, {})[folder] = path
    return found


def ids_for_side(images: dict[str, dict[str, Path]], side: str, where: Path) -> list[str]:
    """The sorted ids that have every image ``side`` needs; none is a ``UserError``."""
    needed = SIDE_FOLDERS[check_side(side)]
    ids = sorted(pair_id for pair_id, sides in images.items() if all(f in sides for f in needed))
    if not ids:
        raise UserError(
            f"{where}: no images for side={side} (it needs {' and '.join(f + '/' for f in needed)} "
            "with matching file names); fix the folder or the side"
        )
    return ids
