"""Identity distance from dlib's face descriptor (128-d ResNet; same person below 0.6).

An offline, real-network identity score for any model: the euclidean distance between the
descriptor of a face in a photo and that of the face in its translation (a cartoon, a pix2pix
output). The translation's face is searched with dlib's detector (on a copy enlarged to at
least ``MIN_SEARCH_SIDE`` pixels); a translation too far from a photo to be found counts as not
detected, so a model's score is a detection rate plus the distances of the detected faces.
Separate from photo2cartoon's training-time face-ID network (MobileFaceNet), which is a loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from src.faces.detect import Face, to_rgb_array
from src.faces.dlib68 import (
    DESCRIPTOR_FILE,
    LANDMARKS_FILE,
    DlibDetector,
    dlib_available,
    import_dlib,
    load_model,
    model_file,
)

SAME_PERSON = 0.6
"""dlib's threshold: descriptors of one person are closer than this (99.38 % on LFW)."""
MIN_SEARCH_SIDE = 256


@dataclass
class IdentityScores:
    """Identity of translations: how many faces were found in them and how far they are."""

    pairs: int
    detected: int
    distances: list[float]

    @property
    def detection_rate(self) -> float:
        """Share of translations in which a face was found."""
        return self.detected / self.pairs if self.pairs else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain numbers for reports and loggers (distances over the detected faces)."""
        found = np.array(self.distances)
        return {
            "identity_pairs": self.pairs,
            "identity_detection_rate": self.detection_rate,
            "identity_distance": float(found.mean()) if found.size else None,
            "identity_same_person_rate": float((found < SAME_PERSON).mean())
            if found.size
            else None,
        }


class DlibIdentity:
    """128-d face descriptors and distances with dlib's ResNet model (see the module doc)."""

    def __init__(
        self,
        descriptor_file: str | os.PathLike[str] | None = None,
        landmarks_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.dlib = import_dlib()
        path = model_file(descriptor_file, DESCRIPTOR_FILE, "identity.descriptor_file")
        self.network = load_model("descriptor", path)
        shape_path = model_file(landmarks_file, LANDMARKS_FILE, "identity.landmarks_file")
        self.predictor = load_model("shape", shape_path)
        self.detector = DlibDetector(landmarks_file=shape_path)

    def descriptor(self, image: np.ndarray | Image.Image, face: Face) -> np.ndarray:
        """The descriptor of ``face`` in ``image``, from its 68 points (fitted if it has none)."""
        pixels = to_rgb_array(image)
        shape = self._shape(pixels, face)
        return np.array(self.network.compute_face_descriptor(pixels, shape), dtype=np.float64)

    def find(self, image: np.ndarray | Image.Image) -> tuple[np.ndarray, Face] | None:
        """The largest face of ``image`` (enlarged if small) and the image searched, or None."""
        pixels = to_rgb_array(image)
        side = min(pixels.shape[:2])
        if side < MIN_SEARCH_SIDE:
            scale = MIN_SEARCH_SIDE / side
            size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
        faces = self.detector.detect(pixels)
        return (pixels, faces[0]) if faces else None

    def distance_to(
        self, photo: np.ndarray | Image.Image, face: Face, other: np.ndarray | Image.Image
    ) -> float | None:
        """Distance from ``face`` in ``photo`` to the face found in ``other`` (None: no face)."""
        found = self.find(other)
        if found is None:
            return None
        return distance(self.descriptor(photo, face), self.descriptor(*found))

    def image_distance(
        self, first: np.ndarray | Image.Image, second: np.ndarray | Image.Image
    ) -> float | None:
        """Distance between the largest faces of two images (None: a face is missing)."""
        found = self.find(first)
        if found is None:
            return None
        return self.distance_to(*found, second)

    def score_pairs(
        self, photos: list[np.ndarray], translations: list[np.ndarray]
    ) -> IdentityScores:
        """Identity of each translation against its photo (both already face crops)."""
        distances = []
        for photo, translation in zip(photos, translations, strict=True):
            value = self.image_distance(photo, translation)
            if value is not None:
                distances.append(value)
        return IdentityScores(pairs=len(photos), detected=len(distances), distances=distances)

    def _shape(self, pixels: np.ndarray, face: Face) -> Any:
        dlib = self.dlib
        x, y, w, h = face.box
        rect = dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
        if face.points is None or len(face.points) != 68:
            return self.predictor(pixels, rect)
        indices = np.rint(np.asarray(face.points) - 0.5).astype(int)
        return dlib.full_object_detection(rect, [dlib.point(int(a), int(b)) for a, b in indices])


def distance(first: np.ndarray, second: np.ndarray) -> float:
    """Euclidean distance of two descriptors."""
    return float(np.linalg.norm(np.asarray(first) - np.asarray(second)))


def identity_scorer(wanted: bool | None) -> DlibIdentity | None:
    """A scorer if ``wanted`` (None: when dlib and its models are installed), else None."""
    if wanted is None:
        wanted = dlib_available()
    return DlibIdentity() if wanted else None
