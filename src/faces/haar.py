"""The default face detector: OpenCV's bundled Haar cascades (frontal face, then eyes).

Needs nothing beyond ``opencv-python-headless<5`` (5.x no longer ships the cascades). Faces are
found on a copy shrunk to ``max_side`` pixels (fast on large photos); eyes are searched in the
upper part of each face box at full resolution, rescaled so the face is ``EYE_SEARCH_WIDTH``
pixels wide, with the plain eye cascade and the one trained on glasses. The most plausible
left/right pair is kept; without one, the eyes are placed where a Haar box usually has them.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from src.common.errors import UserError
from src.faces.detect import Face, register_detector, to_rgb_array

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
EYE_SEARCH_WIDTH = 200
# Where a frontal-face Haar box has the eyes, as fractions of its width and height; measured on
# the shipped test photos and used when the eye cascades find no plausible pair.
BOX_EYE_X = (0.3, 0.7)
BOX_EYE_Y = 0.38


class HaarDetector:
    """Frontal faces and their eye centres with OpenCV's Haar cascades (see the module doc)."""

    def __init__(
        self,
        min_face: int = 24,
        scale_factor: float = 1.1,
        min_neighbors: int = 6,
        max_side: int = 1024,
        find_eyes: bool = True,
        cascade_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        folder = Path(cascade_dir) if cascade_dir is not None else Path(cv2.data.haarcascades)
        self.face_cascade = _load_cascade(folder / FACE_CASCADE)
        self.eye_cascades = [_load_cascade(folder / name) for name in EYE_CASCADES]
        self.min_face = int(min_face)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.max_side = int(max_side)
        self.find_eyes = bool(find_eyes)

    def detect(self, image: np.ndarray | Image.Image) -> list[Face]:
        """Faces in ``image``, largest first, each with eye centres (found or estimated)."""
        gray = cv2.cvtColor(to_rgb_array(image), cv2.COLOR_RGB2GRAY)
        shrink = min(1.0, self.max_side / max(gray.shape))
        small = gray if shrink == 1.0 else cv2.resize(gray, None, fx=shrink, fy=shrink)
        min_side = max(8, round(self.min_face * shrink))
        boxes = self.face_cascade.detectMultiScale(
            cv2.equalizeHist(small),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        faces = []
        for x, y, w, h in boxes:
            box = (x / shrink, y / shrink, w / shrink, h / shrink)
            eyes = self._find_eyes(gray, box) if self.find_eyes else None
            found = eyes is not None
            left, right = eyes if found else _box_eyes(box)
            faces.append(
                Face(box=box, landmarks={"left_eye": left, "right_eye": right}, score=float(found))
            )
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])

    def _find_eyes(
        self, gray: np.ndarray, box: tuple[float, float, float, float]
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The most plausible eye pair inside the face box, or None."""
        x, y, w, h = box
        x0, y0 = max(0, int(x - 0.1 * w)), max(0, int(y + 0.1 * h))
        x1, y1 = min(gray.shape[1], int(x + 1.1 * w)), min(gray.shape[0], int(y + 0.7 * h))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        # No histogram equalisation here: it hides eyes behind glasses' reflections.
        scale = EYE_SEARCH_WIDTH / w
        region = cv2.resize(gray[y0:y1, x0:x1], None, fx=scale, fy=scale)
        lo, hi = round(0.1 * EYE_SEARCH_WIDTH), round(0.4 * EYE_SEARCH_WIDTH)
        centres = []
        for cascade in self.eye_cascades:
            found = cascade.detectMultiScale(region, 1.05, 3, minSize=(lo, lo), maxSize=(hi, hi))
            for ex, ey, ew, eh in found:
                centres.append((x0 + (ex + ew / 2) / scale, y0 + (ey + eh / 2) / scale))
        pair = _best_pair(centres, box)
        if pair is None:
            return None
        # Both cascades usually fire on each eye: average the hits near each chosen one.
        left, right = (_mean_near(centres, eye, 0.08 * w) for eye in pair)
        return left, right


def _best_pair(
    centres: list[tuple[float, float]], box: tuple[float, float, float, float]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The pair of eye candidates that best fits a frontal face in ``box``, or None."""
    x, y, w, h = box
    best, best_cost = None, float("inf")
    for a, b in itertools.combinations(centres, 2):
        left, right = (a, b) if a[0] < b[0] else (b, a)
        dx, dy = right[0] - left[0], right[1] - left[1]
        if not 0.25 * w <= dx <= 0.7 * w or abs(dy) > 0.25 * dx:
            continue
        if not all(y + 0.15 * h <= p[1] <= y + 0.6 * h for p in (left, right)):
            continue
        mid_x = (left[0] + right[0]) / 2
        cost = abs(mid_x - (x + w / 2)) / w + abs(dy) / dx + abs(dx / w - 0.42)
        if cost < best_cost:
            best, best_cost = (left, right), cost
    return best


def _mean_near(
    centres: list[tuple[float, float]], point: tuple[float, float], radius: float
) -> tuple[float, float]:
    near = [c for c in centres if np.hypot(c[0] - point[0], c[1] - point[1]) <= radius]
    mean = np.mean(near, axis=0)
    return float(mean[0]), float(mean[1])


def _box_eyes(
    box: tuple[float, float, float, float],
) -> tuple[tuple[float, float], tuple[float, float]]:
    x, y, w, h = box
    eye_y = y + BOX_EYE_Y * h
    return (x + BOX_EYE_X[0] * w, eye_y), (x + BOX_EYE_X[1] * w, eye_y)


def _load_cascade(path: Path) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise UserError(
            f"Haar cascade {path} is missing or unreadable; install opencv-python-headless<5 "
            "(5.x no longer ships the cascades) or set cascade_dir= to a folder holding them"
        )
    return cascade


register_detector("haar", HaarDetector)
