"""``src.faces.prepare``: a folder of pictures -> aligned crops, with what was skipped counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.faces.detect import Face
from src.faces.prepare import REPORT_FILE, crop_name, prepare_folder
from tests.conftest import run_module

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


class BoxesDetector:
    """Two faces per picture: one of 60 px (kept), one of 20 px (too small)."""

    def detect(self, image) -> list[Face]:
        eyes = {"left_eye": (30.0, 40.0), "right_eye": (60.0, 40.0)}
        small = {"left_eye": (105.0, 105.0), "right_eye": (112.0, 105.0)}
        return [Face((15, 20, 60, 60), eyes), Face((100, 100, 20, 20), small)]


def picture(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(path)


def test_crops_are_written_and_every_skip_is_counted(tmp_path: Path) -> None:
    source = tmp_path / "in"
    picture(source / "a.jpg")
    picture(source / "sub" / "a.jpg")
    (source / "broken.png").write_bytes(b"not a picture")
    report = prepare_folder(source, tmp_path / "out", BoxesDetector(), size=64, max_faces=None)

    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["a_jpg_face0.png", "sub__a_jpg_face0.png"]
    assert Image.open(tmp_path / "out" / written[0]).size == (64, 64)
    saved = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert saved["images"] == 2 and saved["faces"] == 2
    assert saved["skipped_faces"] == {"too small (min_face)": 2}
    assert list(saved["unreadable"]) == [str(source / "broken.png")]
    assert "2 face crops from 2 pictures" in report.line()


def test_names_never_collide_and_bad_input_is_one_line(tmp_path: Path) -> None:
    assert crop_name(tmp_path / "a.jpg", tmp_path, 0) != crop_name(tmp_path / "a.png", tmp_path, 0)
    with pytest.raises(UserError, match="does not exist"):
        prepare_folder(tmp_path / "nope", tmp_path / "out", BoxesDetector())
    with pytest.raises(UserError, match="template=square"):
        prepare_folder(tmp_path, tmp_path / "out", BoxesDetector(), template="square")


@pytest.mark.slow
def test_the_command_on_real_photos(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    shutil.copytree(PHOTOS, source, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "faces"
    result = run_module("src.faces.prepare", f"input={source}", f"output={out}", "size=128")
    assert result.returncode == 0, result.stderr
    assert "face crops from 3 pictures" in result.stdout
    assert (
        len(list(out.glob("*_face0.png"))) == json.loads((out / REPORT_FILE).read_text())["faces"]
    )
