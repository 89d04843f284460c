"""Detection on the shipped photos, FFHQ alignment (exact on toy faces), photo2cartoon crops."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.common.toyfaces import landmarks, make_face, render, write_toyfaces
from src.faces import (
    Face,
    align_face,
    crop_faces,
    detector_names,
    make_detector,
    register_detector,
    require_model_file,
)
from src.faces.haar import HaarDetector

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
# Eye centres marked by hand (see tests/data/photos/README.md).
MARKED_EYES = {
    "astronaut.jpg": ((151.5, 75.4), (185.9, 77.3)),
    "grace_hopper.jpg": ((142.1, 121.0), (195.2, 120.3)),
}
CROP = 256


@pytest.fixture(scope="module")
def detector() -> HaarDetector:
    return make_detector("haar")


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


@pytest.mark.parametrize("name", sorted(MARKED_EYES))
def test_haar_finds_the_face_and_its_eyes(detector: HaarDetector, name: str) -> None:
    faces = detector.detect(load(name))
    assert len(faces) == 1
    face = faces[0]
    assert face.score == 1.0, "the eye cascades should find both eyes"
    for found, marked in zip(
        (face.landmarks["left_eye"], face.landmarks["right_eye"]), MARKED_EYES[name], strict=True
    ):
        assert math.dist(found, marked) < 3.0


def test_both_faces_of_the_two_face_photo(detector: HaarDetector) -> None:
    photo = load("two_faces.jpg")
    faces = detector.detect(photo)
    assert len(faces) == 2
    centres_x = sorted(f.box[0] + f.box[2] / 2 for f in faces)
    # Astronaut in the left 384 px, Grace Hopper in the right part.
    assert centres_x[0] < 384 < centres_x[1]
    assert faces[0].box[2] >= faces[1].box[2], "largest first"


@pytest.mark.parametrize("name", sorted(MARKED_EYES))
def test_aligned_crop_puts_the_marked_eyes_on_the_template(
    detector: HaarDetector, name: str
) -> None:
    photo = load(name)
    aligned = align_face(photo, detector.detect(photo)[0], CROP, "ffhq")
    assert aligned.image.shape == (CROP, CROP, 3)
    marked = aligned.to_crop(np.array(MARKED_EYES[name]))
    detected = aligned.to_crop(
        np.array([aligned.face.landmarks["left_eye"], aligned.face.landmarks["right_eye"]])
    )
    # Without mouth corners the mouth is placed straight below the eyes, so the template has the
    # eyes level and symmetric about the centre, at most a quarter of the side apart (3/8, 5/8).
    assert abs(detected[0, 1] - detected[1, 1]) < 1e-6
    assert detected[0, 0] + detected[1, 0] == pytest.approx(CROP, abs=1e-6)
    assert 0.2 * CROP < detected[1, 0] - detected[0, 0] <= 0.25 * CROP + 1e-6
    assert 0.3 * CROP < detected[0, 1] < 0.5 * CROP
    assert np.abs(marked - detected).max() < 4.0


def toy_face_crop(params, size: int, crop: int):
    photo = render(params, "photo", size)
    points = landmarks(params, size)
    face = Face(box=(0.0, 0.0, float(size), float(size)), landmarks=points)
    return align_face(photo, face, crop, "ffhq"), points


@pytest.mark.parametrize("index", [0, 1, 2])
def test_toy_faces_align_exactly(index: int) -> None:
    params = make_face(0, "trainA", index, 64).params
    posed = dataclasses.replace(params, roll_degrees=12.0, shift=(0.06, -0.04), scale=0.8)
    (plain, plain_points), (moved, moved_points) = (
        toy_face_crop(p, 128, 64) for p in (params, posed)
    )
    names = list(plain_points)
    in_plain = plain.to_crop(np.array([plain_points[n] for n in names]))
    in_moved = moved.to_crop(np.array([moved_points[n] for n in names]))
    # Landmarks land on the same crop positions whatever the pose...
    np.testing.assert_allclose(in_moved, in_plain, atol=1e-6)
    # ... those the FFHQ recipe predicts (toy mouths are centred under the eyes) ...
    left, right = np.array(plain_points["left_eye"]), np.array(plain_points["right_eye"])
    mouth = (np.array(plain_points["mouth_left"]) + np.array(plain_points["mouth_right"])) / 2
    eye_dist, mouth_dist = np.hypot(*(right - left)), np.hypot(*(mouth - (left + right) / 2))
    half_side = max(2 * eye_dist, 1.8 * mouth_dist)
    scale = 64 / (2 * half_side)
    expected_y = 32 - 0.1 * mouth_dist * scale
    expected = [[32 - eye_dist / 2 * scale, expected_y], [32 + eye_dist / 2 * scale, expected_y]]
    np.testing.assert_allclose(in_plain[:2], expected, atol=1e-6)
    # ... and the pictures agree up to resampling.
    difference = np.abs(plain.image.astype(float) - moved.image.astype(float))
    assert difference.mean() < 6.0


def test_transform_round_trips() -> None:
    params = make_face(0, "trainA", 3, 64).params
    aligned, points = toy_face_crop(params, 96, 48)
    pts = np.array(list(points.values()))
    np.testing.assert_allclose(aligned.to_photo(aligned.to_crop(pts)), pts, atol=1e-9)


def test_ffhq_crop_reflects_beyond_the_photo() -> None:
    photo = np.zeros((100, 100, 3), np.uint8)
    photo[:, :10] = 200  # a bright strip at the left edge
    face = Face(box=(0, 20, 40, 40), landmarks={"left_eye": (8.0, 35.0), "right_eye": (24.0, 35.0)})
    crop = align_face(photo, face, 64, "ffhq").image
    # The crop spans x = -16..48 at one photo pixel a crop pixel: its columns 6..15 lie left of
    # the photo, where the strip shows mirrored (and, as the FFHQ script pads, blurred and
    # faded to the median colour, black, towards the outside) instead of black.
    assert crop[:, 10:16].mean() > 130
    assert crop[:, 6:10].mean() < crop[:, 10:16].mean() - 40
    assert crop[:, :4].mean() < 10
    assert (crop[:, 17:23] == 200).all(), "the photo itself is left sharp"


def test_photo2cartoon_crop_geometry_and_white_fill() -> None:
    photo = np.full((200, 200, 3), 90, np.uint8)
    face = Face(box=(60.0, 10.0, 80.0, 80.0))
    aligned = align_face(photo, face, 210, "photo2cartoon")
    # Enlarged: up 0.8 h, down 0.3 h, sides 0.3 w -> 128 x 168, squared to 168: 0.8 px a pixel.
    corners = aligned.to_crop(np.array([[60.0, 10.0], [140.0, 90.0]]))
    np.testing.assert_allclose(corners, [[55.0, 80.0], [155.0, 180.0]], atol=1e-6)
    # The square starts 54 px above the photo: white there, the photo below.
    assert (aligned.image[:60] == 255).all()
    assert (aligned.image[80:200, 60:150] == 90).all()


def test_small_faces_are_skipped_with_a_reason(detector: HaarDetector) -> None:
    aligned, skipped = crop_faces(load("two_faces.jpg"), detector, 64, min_face=100)
    assert len(aligned) == 1 and aligned[0].face.box[0] > 384
    assert len(skipped) == 1
    assert "below the minimum of 100 px" in skipped[0].reason


def test_max_faces_keeps_the_largest(detector: HaarDetector) -> None:
    aligned, skipped = crop_faces(load("two_faces.jpg"), detector, 64, max_faces=1)
    assert len(aligned) == 1 and aligned[0].face.box[0] > 384
    assert "more than 1 faces" in skipped[0].reason


def test_registry_and_model_file_errors(tmp_path: Path) -> None:
    class FixedDetector:
        def detect(self, image):
            eyes = {"left_eye": (25.0, 30.0), "right_eye": (55.0, 30.0)}
            return [Face(box=(10, 10, 60, 60), landmarks=eyes)]

    register_detector("fixed_for_test", FixedDetector)
    assert "fixed_for_test" in detector_names() and "haar" in detector_names()
    aligned, _ = crop_faces(np.zeros((80, 80, 3), np.uint8), make_detector("fixed_for_test"), 32)
    assert len(aligned) == 1
    with pytest.raises(UserError, match="unknown face detector 'mtcnn'"):
        make_detector("mtcnn")
    with pytest.raises(UserError, match=r"set dlib\.model=/path/to/file"):
        require_model_file(tmp_path / "shape_predictor_68.dat", "dlib", "dlib.model")
    with pytest.raises(UserError, match="cascade_dir"):
        HaarDetector(cascade_dir=tmp_path)


def test_landmarks_json_of_the_toyfaces_stage_aligns_exactly(tmp_path: Path) -> None:
    write_toyfaces(
        tmp_path,
        seed=0,
        size=64,
        train_count=4,
        test_count=1,
        paired_count=2,
        bad_fraction=0.0,
        contact_sheet_pairs=0,
        workers=1,
        progress=False,
    )
    points = json.loads((tmp_path / "landmarks.json").read_text())
    for name in ("trainA/000000.png", "trainA/000003.png", "paired/B/000001.png"):
        marks = {k: tuple(v) for k, v in points[name].items()}
        photo = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        aligned = align_face(photo, Face(box=(0, 0, 64, 64), landmarks=marks), 48, "ffhq")
        eyes = aligned.to_crop(np.array([marks["left_eye"], marks["right_eye"]]))
        # Toy mouths are centred below the eyes: the eyes land level and symmetric, exactly.
        assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-3
        assert eyes[0, 0] + eyes[1, 0] == pytest.approx(48, abs=1e-3)
