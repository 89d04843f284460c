"""Feathered paste-back and GrabCut background whitening."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from src.faces import (
    Face,
    align_face,
    crop_faces,
    feather_mask,
    make_detector,
    paste,
    white_background,
)

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    error = ((a.astype(float) - b.astype(float)) ** 2)[where].mean()
    return float(10 * np.log10(255.0**2 / max(error, 1e-12)))


def test_feather_mask_is_one_inside_and_fades_to_the_border() -> None:
    mask = feather_mask(100, 0.1)
    assert mask[50, 50] == 1.0 and mask[10:90, 10:90].min() == 1.0
    assert mask[0, 50] < 0.05 and mask[50, 0] < 0.05
    assert np.all(np.diff(mask[50, :10]) > 0), "rises monotonically over the edge"


def test_pasting_the_unchanged_crop_reproduces_the_photo() -> None:
    photo = np.asarray(Image.open(PHOTOS / "two_faces.jpg").convert("RGB"))
    aligned, _ = crop_faces(photo, make_detector("haar"), 256)
    assert len(aligned) == 2
    out = photo
    for face in aligned:
        out, mask = paste(out, face.image, face)
        inside = mask > 0.01
        assert inside.sum() > 1000
        assert psnr(out, photo, inside) >= 35.0


def test_paste_changes_only_the_face_region() -> None:
    photo = np.full((120, 160, 3), 40, np.uint8)
    eyes = {"left_eye": (65.0, 50.0), "right_eye": (85.0, 50.0)}
    face = Face(box=(50, 30, 50, 50), landmarks=eyes)
    aligned = align_face(photo, face, 64, "ffhq")
    white = np.full_like(aligned.image, 255)
    out, mask = paste(photo, white, aligned)
    assert out[55, 75].min() == 255, "the crop's centre is fully replaced"
    assert (out[mask == 0] == 40).all(), "outside the mask nothing changes"
    assert out[mask > 0].min() > 40 or (mask > 0).sum() > 0


def test_grabcut_whitens_the_background_and_keeps_the_person() -> None:
    image = np.zeros((128, 128, 3), np.uint8)
    image[:] = (40, 90, 200)  # blue backdrop
    cv2.ellipse(image, (64, 52), (22, 28), 0, 0, 360, (225, 180, 150), -1)  # head
    cv2.rectangle(image, (30, 84), (98, 128), (30, 30, 30), -1)  # shoulders
    out = white_background(image, (44.0, 30.0, 40.0, 44.0))
    assert out[5, 5].min() > 240 and out[60, 8].min() > 240, "backdrop turned white"
    assert np.abs(out[52, 64].astype(int) - image[52, 64]).max() <= 3, "face kept"
    assert out[110, 64].max() < 60, "shoulders kept"


def test_a_user_segmenter_replaces_grabcut() -> None:
    image = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1.0
    out = white_background(image, (8, 8, 16, 16), segmenter=lambda _: mask)
    assert (out[8:24, 8:24] == 100).all() and (out[:8] == 255).all()


def test_whitened_crops_paste_back_only_the_person() -> None:
    photo = np.asarray(Image.open(PHOTOS / "astronaut.jpg").convert("RGB"))
    aligned, _ = crop_faces(photo, make_detector("haar"), 128, template="photo2cartoon", white=True)
    face = aligned[0]
    assert face.foreground is not None and face.foreground.shape == (128, 128)
    assert (face.image[face.foreground < 0.01] >= 250).all(), "background whitened"
    out, mask = paste(photo, face.image, face)
    # The crop's white corners are not pasted: the photo stays as it was there.
    corner = face.to_photo(np.array([[6.0, 6.0]]))[0].round().astype(int)
    assert mask[corner[1], corner[0]] < 0.01
    np.testing.assert_array_equal(out[corner[1], corner[0]], photo[corner[1], corner[0]])
    assert mask.max() > 0.99
