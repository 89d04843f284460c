"""The cleaner's data: a stratified split that keeps the class ratio, class-balanced batches,
and the labelling command when labels are missing or too few."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.cleaner.__main__ import labelled_items, labelling_step
from src.cleaner.data import CleanerDataModule, LabelledItem, check_classes, stratified_split
from src.common.errors import UserError
from tests.cleaner.helpers import toy_pairs


def items(good: int, bad: int) -> list[LabelledItem]:
    labels = [True] * good + [False] * bad
    return [LabelledItem(f"{i:06d}", (Path(f"{i:06d}.png"),), g) for i, g in enumerate(labels)]


def test_split_keeps_each_class_share_and_is_seeded() -> None:
    labelled = items(good=80, bad=20)
    train, val = stratified_split(labelled, val_fraction=0.25, seed=1)
    assert Counter(item.good for item in val) == {True: 20, False: 5}
    assert {item.name for item in train}.isdisjoint(item.name for item in val)
    assert len(train) + len(val) == 100
    assert stratified_split(labelled, 0.25, seed=1) == (train, val)
    assert stratified_split(labelled, 0.25, seed=2)[1] != val
    # A class of two still leaves one sample to train on.
    _, small_val = stratified_split(items(good=10, bad=2), val_fraction=0.9, seed=0)
    assert Counter(item.good for item in small_val)[False] == 1


def test_training_batches_draw_both_classes_equally_often() -> None:
    labelled = items(good=90, bad=10)
    module = CleanerDataModule(
        labelled,
        labelled[:2],
        image_size=32,
        batch_size=8,
        num_workers=0,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        augment={},
        seed=0,
    )
    torch.manual_seed(0)
    drawn = Counter()
    for _ in range(20):
        drawn.update(labelled[i].good for i in module.balanced_sampler())
    assert abs(drawn[False] / sum(drawn.values()) - 0.5) < 0.05, drawn


def test_missing_labels_stop_with_the_labelling_command(tmp_path: Path) -> None:
    pairs = toy_pairs(tmp_path / "toy", count=8)
    labels = tmp_path / "run" / "labels.csv"
    params = OmegaConf.create(
        {"folders": None, "pairs": str(pairs), "labels": str(labels), "min_per_class": 300}
    )
    command = f"python -m src.cleaner.label pairs={pairs} labels={labels}"
    with pytest.raises(UserError, match="the chain stops here") as err:
        labelled_items(params, "cartoon")
    assert command in str(err.value) and "about 300 of each class" in str(err.value)

    labels.parent.mkdir()
    shutil.copyfile(pairs / "labels.csv", labels)
    items, _ = labelled_items(params, "cartoon")
    with pytest.raises(UserError, match=r"label at least 300 of each") as err:
        check_classes(items, str(labels), 300, labelling_step(params))
    assert command in str(err.value) and "run the same command again" in str(err.value)
    check_classes(items, str(labels), 2, labelling_step(params))
