"""``python -m src.cleaner.filter``: score every generated pair and mark which to keep (the
chain's ``cleaner_filter`` stage).

Reads ``<pairs>/manifest.jsonl`` (dataset_gen's layout; without it, ``A/`` and ``B/`` matched
by file name), scores each pair with ``classifier.pt`` in batches and writes
``manifest.filtered.jsonl``: every pair exactly once, its original keys plus ``score``
(P(good)) and ``kept``, with ``a``/``b`` relative to this stage's folder. Images are never
moved or deleted. A pair whose image cannot be read gets ``score: null``, ``kept: false`` and
an ``error``. Also writes ``summary.json``, ``score_histogram.png`` and contact sheets of the
lowest-scored kept and highest-scored rejected pairs (also to TensorBoard).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from src.cleaner.data import build_transform, to_model_input
from src.cleaner.labels import SIDE_FOLDERS
from src.cleaner.model import Classifier, keep_mask, load_classifier
from src.cleaner.pictures import captioned_sheet, score_histogram
from src.common import tags
from src.common.data import pairs_from_folders
from src.common.errors import UserError
from src.common.fileio import atomic_open, atomic_write_json
from src.common.images import BadImageError, load_image, save_image
from src.common.stage import StageContext, run_stage
from src.common.visual import write_tensorboard_picture

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
FILTERED_FILE = "manifest.filtered.jsonl"
SUMMARY_FILE = "summary.json"
HISTOGRAM_FILE = "score_histogram.png"
LOWEST_KEPT_FILE = "lowest_kept.png"
HIGHEST_REJECTED_FILE = "highest_rejected.png"


@dataclass
class PairRow:
    """One pair of the source manifest: its JSON object and its two image files."""

    row: dict[str, Any]
    a: Path
    b: Path


def read_pairs(pairs_dir: str | os.PathLike[str]) -> list[PairRow]:
    """The pairs of a dataset_gen folder, each once (a repeated a/b row is dropped, warned)."""
    root = Path(pairs_dir)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        if not root.is_dir():
            raise UserError(f"pairs: folder {root} does not exist; point pairs= at dataset_gen")
        return [
            PairRow({"id": a.stem, "a": f"A/{a.name}", "b": f"B/{b.name}"}, a, b)
            for a, b in pairs_from_folders(root)
        ]
    rows: list[PairRow] = []
    seen: set[tuple[str, str]] = set()
    with open(manifest, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{manifest}, line {number}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not row.get("a") or not row.get("b"):
                raise UserError(f"{manifest}, line {number}: a row needs 'a' and 'b' paths")
            key = (row["a"], row["b"])
            if key in seen:
                logger.warning(
                    "%s, line %d: pair %s listed again; keeping one", manifest, number, key
                )
                continue
            seen.add(key)
            rows.append(PairRow(row, root / row["a"], root / row["b"]))
    if not rows:
        raise UserError(f"{manifest}: no pairs listed; run dataset_gen first")
    return rows


class PairImages(Dataset):
    """The classifier's input for each pair, or an error reason when a file is bad."""

    def __init__(self, pairs: Sequence[PairRow], classifier: Classifier) -> None:
        self.pairs = list(pairs)
        self.folders = SIDE_FOLDERS[classifier.side]
        self.transform = build_transform(
            classifier.image_size, train=False, mean=classifier.mean, std=classifier.std
        )
        channels_width = len(self.folders) * classifier.image_size
        self.blank = torch.zeros(3, classifier.image_size, channels_width)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        paths = [pair.a if folder == "A" else pair.b for folder in self.folders]
        try:
            image = to_model_input([load_image(path) for path in paths], self.transform)
        except BadImageError as exc:
            return {"image": self.blank, "index": index, "error": f"{exc.reason}: {exc.path}"}
        return {"image": image, "index": index, "error": ""}


@torch.no_grad()
def score_pairs(
    pairs: Sequence[PairRow],
    classifier: Classifier,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """The logit of "good" for every pair (NaN where unreadable) and the error per pair."""
    loader = DataLoader(
        PairImages(pairs, classifier), batch_size=batch_size, num_workers=num_workers
    )
    device = next(classifier.net.parameters()).device
    logits = torch.full((len(pairs),), float("nan"))
    errors = [""] * len(pairs)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scoring pairs", total=len(pairs))
        for batch in loader:
            out = classifier.net(batch["image"].to(device)).squeeze(1).float().cpu()
            for position, (index, error) in enumerate(
                zip(batch["index"].tolist(), batch["error"], strict=True)
            ):
                errors[index] = error
                if not error:
                    logits[index] = out[position]
            bar.advance(task, len(batch["index"]))
    return logits, errors


def filtered_rows(
    pairs: Sequence[PairRow],
    logits: torch.Tensor,
    errors: Sequence[str],
    threshold: float,
    out_dir: Path,
    min_kept: int = 0,
) -> list[dict[str, Any]]:
    """Every pair's row with ``score`` and ``kept``; ``a``/``b`` made relative to ``out_dir``.

    When fewer than ``min_kept`` readable pairs pass ``threshold``, the ``min_kept`` best-scored
    ones are kept (with a warning), so the next stage always has something to train on.
    """
    readable = ~torch.isnan(logits)
    kept = keep_mask(torch.nan_to_num(logits, nan=0.0), threshold) & readable
    wanted = min(min_kept, int(readable.sum()))
    if int(kept.sum()) < wanted:
        logger.warning(
            "only %d pairs pass threshold %.3f; keeping the %d best-scored (min_kept)",
            int(kept.sum()),
            threshold,
            wanted,
        )
        best = torch.argsort(torch.nan_to_num(logits, nan=float("-inf")), descending=True)
        kept[best[:wanted]] = True
    scores = torch.sigmoid(logits.double())
    base = out_dir.absolute()
    rows = []
    for index, pair in enumerate(pairs):
        row = dict(pair.row)
        row["a"] = Path(os.path.relpath(pair.a.absolute(), base)).as_posix()
        row["b"] = Path(os.path.relpath(pair.b.absolute(), base)).as_posix()
        row["score"] = round(float(scores[index]), 6) if readable[index] else None
        row["kept"] = bool(kept[index])
        if errors[index]:
            row["error"] = errors[index]
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def write_summary(
    ctx: StageContext, pairs: Sequence[PairRow], rows: Sequence[dict[str, Any]], threshold: float
) -> list[str]:
    """summary.json, the score histogram and the two contact sheets (PNG and TensorBoard)."""
    scored = [(i, row["score"]) for i, row in enumerate(rows) if row["score"] is not None]
    kept = sorted(((s, i) for i, s in scored if rows[i]["kept"]))
    rejected = sorted(((s, i) for i, s in scored if not rows[i]["kept"]), reverse=True)
    summary = {
        "pairs": len(rows),
        "kept": len(kept),
        "rejected": len(rows) - len(kept),
        "unreadable": len(rows) - len(scored),
        "kept_fraction": len(kept) / len(rows),
        "threshold": threshold,
    }
    atomic_write_json(ctx.out_dir / SUMMARY_FILE, summary)
    log_dir = Path(ctx.cfg.paths.log_dir) / ctx.stage
    histogram = score_histogram([s for _, s in scored], threshold)
    save_image(histogram, ctx.out_dir / HISTOGRAM_FILE)
    pictures = {HISTOGRAM_FILE: histogram}
    count = int(ctx.params.sheet_pairs)
    for name, chosen in ((LOWEST_KEPT_FILE, kept), (HIGHEST_REJECTED_FILE, rejected)):
        (ctx.out_dir / name).unlink(missing_ok=True)
        if chosen and count > 0:
            sheet = captioned_sheet(
                [[load_image(pairs[i].a), load_image(pairs[i].b)] for _, i in chosen[:count]],
                [f"{Path(pairs[i].a).stem} {s:.3f}" for s, i in chosen[:count]],
            )
            save_image(sheet, ctx.out_dir / name)
            pictures[name] = sheet
    for name, picture in pictures.items():
        write_tensorboard_picture(log_dir, tags.samples(Path(name).stem), picture)
    print(
        f"{ctx.stage}: kept {summary['kept']} of {summary['pairs']} pairs "
        f"({summary['kept_fraction']:.1%}) at threshold {threshold:.3f}"
    )
    return [SUMMARY_FILE, *pictures]


def run_filter(ctx: StageContext) -> list[str]:
    """The stage function: score, write the filtered manifest and the summary."""
    p = ctx.params
    device = str(p.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    classifier = load_classifier(p.classifier, device)
    threshold = classifier.threshold if p.threshold is None else float(p.threshold)
    pairs = read_pairs(p.pairs)
    logits, errors = score_pairs(pairs, classifier, int(p.batch_size), int(p.num_workers))
    rows = filtered_rows(pairs, logits, errors, threshold, ctx.out_dir, int(p.min_kept))
    write_jsonl(ctx.out_dir / FILTERED_FILE, rows)
    return [FILTERED_FILE, *write_summary(ctx, pairs, rows, threshold)]


if __name__ == "__main__":
    run_stage("cleaner_filter", run_filter)
