"""Cut faces out of photos the way the training data was cut, and keep the transform.

Two templates:

- ``ffhq``: the FFHQ / StyleGAN recipe. From the eye centres and the mouth (the mean of the
  mouth corners, or a point estimated from the face box when they are unknown): ``eye_to_eye``
  and ``eye_to_mouth``; the crop is an oriented square centred at ``eye_avg + 0.1 *
  eye_to_mouth`` whose half side is ``max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`` (so the eyes
  end up about a quarter of the side apart), turned to the eye line; where it leaves the photo
  the photo is mirrored (reflect padding).
- ``photo2cartoon``: the head box enlarged 0.8 h upwards, 0.3 h downwards and 0.3 w on each
  side, squared around its centre, upright; outside the photo is white.

Coordinates follow the toy faces' convention: pixel (col, row) covers [col, col + 1) x
[row, row + 1), so its centre is (col + 0.5, row + 0.5). ``AlignedFace.matrix`` maps crop
coordinates to photo coordinates (3 x 3, affine); ``paste`` in ``src.faces.masks`` uses it to
put the processed crop back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from src.common.errors import UserError
from src.faces.detect import Face

Template = Literal["ffhq", "photo2cartoon"]
TEMPLATES: tuple[str, ...] = get_args(Template)
WHITE = (255, 255, 255)
# Where the mouth sits in a frontal-face box, as a fraction of its height from the top: the
# mouth estimate when a detector reports no mouth corners.
BOX_MOUTH_Y = 0.8
# Shrink the photo first (area averaging) when a crop pixel covers more than this many photo
# pixels, so that strong downscaling does not alias.
MAX_DIRECT_SCALE = 1.5


@dataclass
class AlignedFace:
    """A face crop (uint8 ``size`` x ``size`` x 3), its template and the crop -> photo matrix."""

    image: np.ndarray
    matrix: np.ndarray
    template: str
    face: Face
    # The person's 0..1 mask over the crop once its background was whitened (else None).
    foreground: np.ndarray | None = None

    @property
    def size(self) -> int:
        """The crop's side in pixels."""
        return int(self.image.shape[0])

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates (N x 2) -> photo coordinates."""
        return _apply(self.matrix, points)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo coordinates (N x 2) -> crop coordinates."""
        return _apply(np.linalg.inv(self.matrix), points)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def mouth_centre(face: Face) -> np.ndarray:
    """The mean of the mouth corners, or where the mouth sits given the eyes and the face box.

    The estimate lies on the eye line's perpendicular through the eyes' midpoint, as far down as
    ``BOX_MOUTH_Y`` of the box height.
    """
    if face.has("mouth_left", "mouth_right"):
        corners = np.array([face.landmarks["mouth_left"], face.landmarks["mouth_right"]])
        return corners.mean(axis=0)
    left, right = np.array(face.landmarks["left_eye"]), np.array(face.landmarks["right_eye"])
    eye_avg, eye_to_eye = (left + right) / 2, right - left
    down = np.array([-eye_to_eye[1], eye_to_eye[0]]) / np.hypot(*eye_to_eye)
    x, y, w, h = face.box
    box_mouth = np.array([x + w / 2, y + BOX_MOUTH_Y * h])
    return eye_avg + down * float(np.dot(box_mouth - eye_avg, down))


def ffhq_matrix(face: Face, size: int) -> np.ndarray:
    """The crop -> photo matrix of the FFHQ template for ``face`` (needs both eye centres)."""
    if not face.has("left_eye", "right_eye"):
        raise UserError("the ffhq template needs eye centres; use a detector that reports them")
    left, right = np.array(face.landmarks["left_eye"]), np.array(face.landmarks["right_eye"])
    eye_avg = (left + right) / 2
    eye_to_eye = right - left
    eye_to_mouth = mouth_centre(face) - eye_avg
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_axis /= np.hypot(*x_axis)
    x_axis *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_avg + 0.1 * eye_to_mouth
    top_left = centre - x_axis - y_axis
    return _matrix(2 * x_axis / size, 2 * y_axis / size, top_left)


def photo2cartoon_matrix(face: Face, size: int) -> np.ndarray:
    """The crop -> photo matrix of photo2cartoon's head crop for ``face`` (uses its box)."""
    x, y, w, h = face.box
    left, right = x - 0.3 * w, x + 1.3 * w
    top, bottom = y - 0.8 * h, y + 1.3 * h
    side = max(right - left, bottom - top)
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    step = side / size
    return _matrix(np.array([step, 0.0]), np.array([0.0, step]), centre - side / 2)


def _matrix(x_step: np.ndarray, y_step: np.ndarray, origin: np.ndarray) -> np.ndarray:
    return np.array(
        [[x_step[0], y_step[0], origin[0]], [x_step[1], y_step[1], origin[1]], [0.0, 0.0, 1.0]]
    )


def align_face(
    image: np.ndarray, face: Face, size: int, template: Template = "ffhq"
) -> AlignedFace:
    """Cut ``face`` out of the RGB ``image`` (uint8 H x W x 3) as a ``size`` square."""
    if template == "ffhq":
        matrix = ffhq_matrix(face, size)
        border, fill = cv2.BORDER_REFLECT_101, (0, 0, 0)
    elif template == "photo2cartoon":
        matrix = photo2cartoon_matrix(face, size)
        border, fill = cv2.BORDER_CONSTANT, WHITE
    else:
        raise UserError(f"unknown template '{template}'; use one of {', '.join(TEMPLATES)}")
    crop = warp(image, matrix, (size, size), border=border, fill=fill)
    return AlignedFace(image=crop, matrix=matrix, template=template, face=face)


def warp(
    source: np.ndarray,
    matrix: np.ndarray,
    out_size: tuple[int, int],
    *,
    border: int = cv2.BORDER_CONSTANT,
    fill: tuple[int, ...] | float = 0,
    interpolation: int = cv2.INTER_LANCZOS4,
) -> np.ndarray:
    """Resample ``source`` so output point p shows source point ``matrix @ p`` (width, height).

    ``matrix`` is in the pixel-area convention of the module doc; shrinking by more than
    ``MAX_DIRECT_SCALE`` first averages pixels so the result does not alias. Lanczos keeps a
    crop-and-paste round trip sharp (bilinear twice blurs a face to about 32 dB PSNR).
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    if scale > MAX_DIRECT_SCALE:
        height, width = source.shape[:2]
        new_w, new_h = max(1, round(width / scale)), max(1, round(height / scale))
        source = cv2.resize(source, (new_w, new_h), interpolation=cv2.INTER_AREA)
        matrix = np.diag([new_w / width, new_h / height, 1.0]) @ matrix
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    index_matrix = np.linalg.inv(half) @ matrix @ half
    return cv2.warpAffine(
        source,
        index_matrix[:2],
        out_size,
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=fill,
    )
