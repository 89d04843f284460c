"""FFHQ alignment from 68 points: the script's formula exactly, and pixels that follow it."""

from __future__ import annotations

import numpy as np
import pytest

from src.faces import Face, align_face
from src.faces.align import ffhq_quad
from src.faces.dlib68 import named_landmarks

SIZE = 64


def tilted_points(seed: int) -> np.ndarray:
    """68 points (pixel indices, the FFHQ JSON's convention) of a tilted face in a 200 px photo."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(60, 140, size=(68, 2))
    points[36:42] = np.array([70.0, 80.0]) + rng.normal(0, 3, (6, 2))
    points[42:48] = np.array([125.0, 70.0]) + rng.normal(0, 3, (6, 2))
    points[48], points[54] = [85, 135], [128, 128]
    return points


def script_quad(lm: np.ndarray) -> np.ndarray:
    """The quad as FFHQ's recreate_aligned_images writes it (rotate_level, no random shift)."""
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def face_of(index_points: np.ndarray) -> Face:
    """The Face the dlib backend makes of these points (shifted to pixel-area coordinates)."""
    points = index_points + 0.5
    return Face(box=(60, 60, 80, 80), landmarks=named_landmarks(points), points=points)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quad_matches_the_script_formula(seed: int) -> None:
    lm = tilted_points(seed)
    aligned = align_face(np.zeros((200, 200, 3), np.uint8), face_of(lm), SIZE, "ffhq")
    # Our quad is in pixel-area coordinates: the script's plus the half pixel it adds before
    # PIL's QUAD transform.
    np.testing.assert_allclose(ffhq_quad(aligned.matrix, SIZE), script_quad(lm) + 0.5, atol=1e-9)


def test_pixels_follow_the_quad() -> None:
    lm = tilted_points(0)
    photo = np.full((200, 200, 3), 40, np.uint8)
    dot = np.array([100.5, 95.5])  # a 3 x 3 white square centred on this pixel-area point
    photo[94:97, 99:102] = 255
    aligned = align_face(photo, face_of(lm), SIZE, "ffhq")
    gray = aligned.image[..., 0].astype(np.float64) - 40
    rows, cols = np.mgrid[:SIZE, :SIZE]
    weights = np.clip(gray, 0, None)
    found = np.array([(weights * (cols + 0.5)).sum(), (weights * (rows + 0.5)).sum()])
    found /= weights.sum()
    np.testing.assert_allclose(found, aligned.to_crop(dot)[0], atol=0.3)


def test_shrink_path_on_a_large_photo() -> None:
    lm = tilted_points(1) * 4  # an 800 px photo: the quad is over 4 x 64, shrunk by 2 or more
    photo = np.full((800, 800, 3), 40, np.uint8)
    photo[398:402, 398:402] = 255
    aligned = align_face(photo, face_of(lm), SIZE, "ffhq")
    row, col = np.unravel_index(np.argmax(aligned.image[..., 0]), (SIZE, SIZE))
    expected = aligned.to_crop(np.array([400.0, 400.0]))[0]
    assert np.hypot(col + 0.5 - expected[0], row + 0.5 - expected[1]) < 1.0
