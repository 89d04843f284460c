"""dlib's identity distance: 0 to itself, over 0.6 to the other test person, scores of pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.common.data import pairs_from_folders
from src.faces import align_face, make_detector
from src.faces.identity_dlib import SAME_PERSON, DlibIdentity
from src.photo2cartoon.evaluate import identity_report
from src.pix2pix.evaluate import evaluate_pairs

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


@pytest.fixture(scope="module")
def identity() -> DlibIdentity:
    return DlibIdentity()


def test_a_photo_is_at_distance_zero_from_itself(identity: DlibIdentity) -> None:
    photo = load("astronaut.jpg")
    assert identity.image_distance(photo, photo) == pytest.approx(0.0, abs=1e-9)


def test_the_other_person_is_over_the_threshold(identity: DlibIdentity) -> None:
    distance = identity.image_distance(load("astronaut.jpg"), load("grace_hopper.jpg"))
    assert distance is not None and distance > SAME_PERSON


def test_aligned_crop_keeps_the_identity(identity: DlibIdentity) -> None:
    photo = load("grace_hopper.jpg")
    face = make_detector("dlib").detect(photo)[0]
    crop = align_face(photo, face, 256).image
    assert identity.distance_to(photo, face, crop) < 0.2


def test_pairs_count_detections_and_distances(identity: DlibIdentity) -> None:
    astronaut, hopper = load("astronaut.jpg"), load("grace_hopper.jpg")
    blank = np.full_like(astronaut, 128)
    scores = identity.score_pairs([astronaut, astronaut, hopper], [astronaut, blank, astronaut])
    assert (scores.pairs, scores.detected) == (3, 2)
    summary = scores.summary()
    assert summary["identity_detection_rate"] == pytest.approx(2 / 3)
    assert summary["identity_same_person_rate"] == pytest.approx(0.5)
    assert summary["identity_distance"] == pytest.approx(scores.distances[1] / 2)


def test_missing_descriptor_file_is_a_one_line_error(tmp_path: Path) -> None:
    from src.common.errors import UserError

    with pytest.raises(UserError, match=r"identity\.descriptor_file="):
        DlibIdentity(descriptor_file=tmp_path / "missing.dat")


class FlatGray(torch.nn.Module):
    """A "generator" that loses the face: every output is mid-gray."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.weight


class Keep(FlatGray):
    """A "generator" that returns its input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.weight


def test_pix2pix_evaluation_reports_identity(identity: DlibIdentity, tmp_path: Path) -> None:
    detector = make_detector("dlib")
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        photo = load(name)
        crop = align_face(photo, detector.detect(photo)[0], 128).image
        for folder in ("A", "B"):
            Image.fromarray(crop).save(tmp_path / folder / f"{Path(name).stem}.png")
    pairs = pairs_from_folders(tmp_path)
    kept = evaluate_pairs(Keep(), pairs, 128, identity=identity)
    assert kept["identity_detection_rate"] == 1.0
    assert kept["identity_distance"] < 0.05 and kept["identity_same_person_rate"] == 1.0
    lost = evaluate_pairs(FlatGray(), pairs, 128, identity=identity)
    assert lost["identity_detection_rate"] == 0.0 and lost["identity_distance"] is None
    assert "identity_distance" not in evaluate_pairs(Keep(), pairs, 128)


def test_photo2cartoon_identity_report(identity: DlibIdentity) -> None:
    detector = make_detector("dlib")
    crops = []
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        photo = load(name)
        crops.append(align_face(photo, detector.detect(photo)[0], 128).image)
    photos = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    kept = identity_report(Keep(), photos, identity, batch_size=1)
    assert kept["identity_pairs"] == 2 and kept["identity_detection_rate"] == 1.0
    assert kept["identity_distance"] < 0.05 and kept["identity_same_person_rate"] == 1.0
    generator = FlatGray().train()
    lost = identity_report(generator, photos, identity)
    assert lost["identity_detection_rate"] == 0.0 and lost["identity_distance"] is None
    assert generator.training
