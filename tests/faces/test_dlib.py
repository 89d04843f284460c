"""The dlib backend on the shipped photos: every face with 68 points, the default when installed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.faces import auto_detector_name, detect, make_detector
from src.faces.dlib68 import DlibDetector, named_landmarks
from src.faces.haar import HaarDetector

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
# Eye centres marked by hand (see tests/data/photos/README.md).
MARKED_EYES = {
    "astronaut.jpg": ((151.5, 75.4), (185.9, 77.3)),
    "grace_hopper.jpg": ((142.1, 121.0), (195.2, 120.3)),
}


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return make_detector("dlib")


@pytest.mark.parametrize("name", sorted(MARKED_EYES))
def test_dlib_finds_the_face_with_68_points(detector: DlibDetector, name: str) -> None:
    photo = load(name)
    (face,) = detector.detect(photo)
    assert face.points is not None and face.points.shape == (68, 2)
    x, _, w, _ = face.box
    inside = (face.points[:, 0] > x - 0.2 * w) & (face.points[:, 0] < x + 1.2 * w)
    assert inside.all(), "the 68 points belong to the detected box"
    # The six-point eye means sit on the hand-marked eyes (dlib's eye contour, not the iris).
    for found, marked in zip(
        (face.landmarks["left_eye"], face.landmarks["right_eye"]), MARKED_EYES[name], strict=True
    ):
        assert math.dist(found, marked) < 5.0
    assert face.has("mouth_left", "mouth_right")
    assert face.landmarks["mouth_left"][1] > face.landmarks["left_eye"][1] + 0.3 * w


def test_dlib_finds_both_faces_of_the_two_face_photo(detector: DlibDetector) -> None:
    faces = detector.detect(load("two_faces.jpg"))
    assert len(faces) == 2
    assert all(face.points is not None and face.points.shape == (68, 2) for face in faces)
    centres_x = sorted(face.points[:, 0].mean() for face in faces)
    assert centres_x[0] < 384 < centres_x[1]
    assert faces[0].box[2] >= faces[1].box[2], "largest first"


def test_named_landmarks_follow_the_ffhq_indices() -> None:
    points = np.arange(136, dtype=np.float64).reshape(68, 2)
    named = named_landmarks(points)
    assert named["left_eye"] == tuple(points[36:42].mean(axis=0))
    assert named["right_eye"] == tuple(points[42:48].mean(axis=0))
    assert named["mouth_left"] == tuple(points[48]) and named["mouth_right"] == tuple(points[54])


def test_large_photos_are_searched_shrunk_and_mapped_back(detector: DlibDetector) -> None:
    photo = load("astronaut.jpg")
    big = np.asarray(Image.fromarray(photo).resize((768, 768), Image.Resampling.LANCZOS))
    (small_face,) = detector.detect(photo)
    (big_face,) = make_detector("dlib", max_side=384).detect(big)
    np.testing.assert_allclose(np.array(big_face.box) / 2, small_face.box, atol=2.0)
    big_eye = np.array(big_face.landmarks["left_eye"]) / 2
    assert math.dist(big_eye, small_face.landmarks["left_eye"]) < 2.0


def test_auto_prefers_dlib_and_falls_back_to_haar(monkeypatch: pytest.MonkeyPatch) -> None:
    assert auto_detector_name() == "dlib"
    assert isinstance(make_detector(), DlibDetector)
    monkeypatch.setitem(detect._AVAILABLE, "dlib", lambda: False)
    assert isinstance(make_detector(), HaarDetector)


def test_missing_model_files_and_unknown_models_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"set detector\.options\.landmarks_file="):
        DlibDetector(landmarks_file=tmp_path / "missing.dat")
    with pytest.raises(UserError, match="use one of hog, cnn"):
        DlibDetector(model="mtcnn")
