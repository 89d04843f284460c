"""The labels file: durable appends, undo records, replay, and other label files."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.cleaner.labels import LabelLog, read_label_events, read_labels
from src.common.errors import UserError


def test_appends_undo_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    log = LabelLog(path)
    log.append("000", "good")
    log.append("001", "bad")
    assert log.undo().pair_id == "001"
    log.append("001", "good")
    log.append("002", "skip")
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "id,label,time"
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["000", "good"],
        ["001", "bad"],
        ["001", "undo"],
        ["001", "good"],
        ["002", "skip"],
    ]
    assert read_labels(path) == {"000": "good", "001": "good", "002": "skip"}
    reopened = LabelLog(path)
    assert reopened.counts() == {"good": 2, "skip": 1}
    reopened.close()


def test_torn_last_line_is_ended_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("id,label,time\n000,good,t")
    log = LabelLog(path)
    log.append("001", "bad")
    log.close()
    assert read_labels(path) == {"000": "good", "001": "bad"}


def test_toyfaces_labels_read_and_bad_rows_refused(tmp_path: Path) -> None:
    toy = tmp_path / "toy.csv"
    toy.write_text("id,label,defect,target\n000001,good,,\n000002,bad,melted,both\n")
    assert read_labels(toy) == {"000001": "good", "000002": "bad"}
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,label\n1,maybe\n")
    with pytest.raises(UserError, match="line 2"):
        read_label_events(wrong)
    headless = tmp_path / "headless.csv"
    headless.write_text("name,verdict\n1,good\n")
    with pytest.raises(UserError, match="id and label"):
        read_label_events(headless)
