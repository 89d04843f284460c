"""The classifier stage on toy good/bad faces, the threshold choice, and the filter stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from src.cleaner.filter import PairRow, filtered_rows, read_pairs, score_pairs
from src.cleaner.model import choose_threshold, create_backbone, keep_mask, load_classifier
from src.common.errors import UserError
from tests.cleaner.helpers import dataset_gen_folder, toy_pairs
from tests.conftest import run_module

# Tiny nets train fastest on one thread, and do not fight the other tests for the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """400 toy pairs (half bad) at 32 px and a test_resnet trained on their cartoons."""
    root = tmp_path_factory.mktemp("cleaner")
    paired = toy_pairs(root / "toy", count=400, size=32, bad_fraction=0.5)
    result = run_module(
        "src.cleaner",
        f"paths.root_dir={root}",
        "run_name=t",
        f"cleaner.pairs={paired}",
        "cleaner.backbone.name=test_resnet",
        "cleaner.backbone.kwargs.drop_rate=0",
        "cleaner.image_size=32",
        "cleaner.batch_size=32",
        "cleaner.num_workers=0",
        "cleaner.lr=3e-3",
        "cleaner.trainer.max_epochs=16",
        "callbacks=minimal",
        env=ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "paired": paired, "out": root / "runs" / "t" / "cleaner"}


@pytest.mark.slow
def test_classifier_learns_toy_good_and_bad(trained: dict[str, Path]) -> None:
    out = trained["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_size"] == 80 and metrics["val_good"] == 40
    assert metrics["accuracy_at_0.5"] >= 0.9, metrics
    assert metrics["auroc"] >= 0.95, metrics
    classifier = load_classifier(out / "classifier.pt")
    assert classifier.backbone == "test_resnet" and classifier.side == "cartoon"
    assert classifier.threshold == pytest.approx(metrics["threshold"])
    assert metrics["target_precision_reached"] and metrics["precision"] >= 0.95
    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == 80
    assert (out / "confusion_matrix.png").stat().st_size > 0
    events = list((trained["root"] / "runs" / "t" / "tensorboard" / "cleaner").rglob("events*"))
    assert events, "nothing logged to TensorBoard"


@pytest.mark.slow
def test_filter_stage_lists_every_pair_once(trained: dict[str, Path]) -> None:
    root = trained["root"]
    source = dataset_gen_folder(trained["paired"], root / "runs" / "t" / "dataset_gen", range(60))
    result = run_module(
        "src.cleaner.filter",
        f"paths.root_dir={root}",
        "run_name=t",
        "cleaner_filter.num_workers=0",
        env=ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "runs" / "t" / "cleaner_filter"
    rows = [json.loads(line) for line in (out / "manifest.filtered.jsonl").read_text().splitlines()]
    assert sorted(row["seed"] for row in rows) == list(range(60))
    assert len({(row["a"], row["b"]) for row in rows}) == 60
    assert rows[0]["a"] == "../dataset_gen/A/000000.png" and rows[0]["psi"] == 0.7
    assert all((out / row["a"]).is_file() and (out / row["b"]).is_file() for row in rows)
    threshold = load_classifier(out.parent / "cleaner" / "classifier.pt").threshold
    assert all(row["kept"] == (row["score"] >= threshold) for row in rows)
    # The toy labels say which pairs are really good: the kept ones should mostly be.
    labels = dict(line.split(",")[:2] for line in (trained["paired"] / "labels.csv").open())
    kept = [labels[f"{row['seed']:06d}"] for row in rows if row["kept"]]
    assert kept and kept.count("good") / len(kept) >= 0.85
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 60 and summary["kept"] == len(kept)
    assert summary["kept_fraction"] == pytest.approx(len(kept) / 60)
    for picture in ("score_histogram.png", "lowest_kept.png", "highest_rejected.png"):
        assert (out / picture).stat().st_size > 0, picture
    assert sorted(os.listdir(source / "A")) == [f"{s:06d}.png" for s in range(60)]


@pytest.mark.slow
def test_threshold_zero_keeps_all_and_one_none(trained: dict[str, Path], tmp_path: Path) -> None:
    source = dataset_gen_folder(trained["paired"], tmp_path / "gen", range(100, 124))
    (source / "B" / "000105.png").write_bytes(b"not a png")
    classifier = load_classifier(trained["out"] / "classifier.pt")
    pairs = read_pairs(source)
    logits, errors = score_pairs(pairs, classifier, batch_size=8, progress=False)
    keep_all = filtered_rows(pairs, logits, errors, 0.0, tmp_path)
    keep_none = filtered_rows(pairs, logits, errors, 1.0, tmp_path)
    broken = next(row for row in keep_all if row["seed"] == 105)
    assert broken["score"] is None and not broken["kept"] and "not_an_image" in broken["error"]
    assert all(row["kept"] for row in keep_all if row["seed"] != 105)
    assert not any(row["kept"] for row in keep_none)


def test_threshold_reaches_target_precision() -> None:
    probs = torch.tensor([0.1, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9])
    good = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1])
    choice = choose_threshold(probs, good, 0.6)
    kept = probs >= choice.threshold
    assert choice.reached and choice.threshold == pytest.approx(0.35)
    assert good[kept].float().mean() >= 0.6
    strict = choose_threshold(probs, good, 1.0)
    assert strict.reached and strict.threshold == pytest.approx(0.9)


def test_keep_mask_ends_are_exact() -> None:
    logits = torch.tensor([-1e4, -3.0, 0.0, 3.0, 1e4])
    assert keep_mask(logits, 0.0).all()
    assert not keep_mask(logits, 1.0).any()
    assert keep_mask(logits, 0.5).tolist() == [False, False, True, True, True]


def test_min_kept_keeps_the_best_scored(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    pairs = [PairRow({"seed": i, "a": "A", "b": "B"}, image, image) for i in range(5)]
    logits = torch.tensor([-5.0, 2.0, float("nan"), -1.0, -3.0])
    rows = filtered_rows(pairs, logits, [""] * 5, 0.99, tmp_path, min_kept=2)
    assert [row["kept"] for row in rows] == [False, True, False, True, False]
    assert rows[1]["score"] < 0.99


def test_backbone_weights_come_from_a_local_file_without_its_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone("test_resnet", num_classes=10)
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    loaded = create_backbone("test_resnet", pretrained_file=str(path))
    mine, theirs = loaded.state_dict(), source.state_dict()
    head = {k for k in theirs if k.startswith(loaded.default_cfg["classifier"])}
    assert head and all(mine[k].shape[0] == 1 for k in head), "a fresh one-output head"
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs if k not in head)
    with pytest.raises(UserError, match=r"pretrained_file .* does not exist"):
        create_backbone("test_resnet", pretrained_file=str(tmp_path / "missing.pth"))
