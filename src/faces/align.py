"""Cut faces out of photos the way the training data was cut, and keep the transform.

Two templates:

- ``ffhq``: the FFHQ / StyleGAN recipe, as NVlabs/ffhq-dataset's ``recreate_aligned_images``
  does it. From the eye centres (with 68 points: the mean of each eye's six points) and the
  mouth (the mean of the mouth corners 48 and 54, or a point estimated from the face box when a
  detector has no mouth): ``eye_to_eye`` and ``eye_to_mouth``; the crop is an oriented square
  centred at ``eye_avg + 0.1 * eye_to_mouth`` whose half side is ``max(2 * |eye_to_eye|, 1.8 *
  |eye_to_mouth|)`` (so the eyes end up about a quarter of the side apart), turned by the eye
  line and the eye-to-mouth line together. The pixels follow the script step by step
  (``ffhq_resample``): shrink the photo by an integer factor while the square stays over twice
  the output size, crop with a border, pad what the square leaves of the photo by reflection
  blended into a blur and the median colour, sample the square at 4x the output size
  (bilinear) and downsample (Lanczos).
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
import scipy.ndimage
from PIL import Image

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


def ffhq_quad(matrix: np.ndarray, size: int) -> np.ndarray:
    """The crop square's corners in the photo (top-left, bottom-left, bottom-right, top-right).

    The order of the FFHQ script's ``quad`` and of PIL's QUAD transform.
    """
    corners = np.array([[0.0, 0.0], [0.0, size], [size, size], [size, 0.0]])
    return _apply(matrix, corners)


def ffhq_resample(
    image: np.ndarray,
    quad: np.ndarray,
    size: int,
    *,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> np.ndarray:
    """The FFHQ script's crop of ``quad`` (pixel-area corners) from ``image``, ``size`` square.

    Steps and constants as ``recreate_aligned_images``: integer shrink while the quad stays over
    twice ``size``, a crop with a border of a tenth of the quad, reflect padding blurred (sigma
    2 % of the quad) and pulled to the median colour towards the outside, the QUAD transform to
    ``transform_size`` (default 4 x ``size``, bilinear) and a Lanczos downsample.
    """
    transform_size = transform_size or 4 * size
    img = Image.fromarray(image)
    # The script's landmarks are pixel indices (centres on integers): work in that convention.
    quad = np.asarray(quad, dtype=np.float64) - 0.5
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        shrunk = (round(img.size[0] / shrink), round(img.size[1] / shrink))
        img = img.resize(shrunk, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(round(qsize * 0.1), 3)
    low, high = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (
        max(low[0] - border, 0),
        max(low[1] - border, 0),
        min(high[0] + border, img.size[0]),
        min(high[1] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[:2]

    low, high = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array(
        [
            max(-low[0] + border, 0),
            max(-low[1] + border, 0),
            max(high[0] - img.size[0] + border, 0),
            max(high[1] - img.size[1] + border, 0),
        ]
    )
    if enable_padding and pad.max() > border - 4:
        pad = np.maximum(pad, round(qsize * 0.3))
        pixels = np.pad(
            np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect"
        )
        height, width = pixels.shape[:2]
        rows, cols = np.ogrid[:height, :width]
        cols, rows = np.float32(cols)[..., None], np.float32(rows)[..., None]
        # 0 at the photo's edge, rising to 1 at the padded edge (negative inside the photo).
        outside = np.maximum(
            1.0 - np.minimum(cols / pad[0], (width - 1 - cols) / pad[2]),
            1.0 - np.minimum(rows / pad[1], (height - 1 - rows) / pad[3]),
        )
        blur = qsize * 0.02
        blurred = scipy.ndimage.gaussian_filter(pixels, [blur, blur, 0])
        pixels += (blurred - pixels) * np.clip(outside * 3.0 + 1.0, 0.0, 1.0)
        pixels += (np.median(pixels, axis=(0, 1)) - pixels) * np.clip(outside, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(pixels), 0, 255)), "RGB")
        quad += pad[:2]

    img = img.transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        tuple((quad + 0.5).flatten()),
        Image.Resampling.BILINEAR,
    )
    if size < transform_size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img)


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
    """Cut ``face`` out of the RGB ``image`` (uint8 H x W x 3) as a ``size`` square.

    The ``ffhq`` pixels come from ``ffhq_resample`` (the FFHQ script's steps); its integer
    shrink moves them by under half a shrunk pixel from ``matrix``, the exact geometry.
    """
    if template == "ffhq":
        matrix = ffhq_matrix(face, size)
        crop = ffhq_resample(image, ffhq_quad(matrix, size), size)
    elif template == "photo2cartoon":
        matrix = photo2cartoon_matrix(face, size)
        crop = warp(image, matrix, (size, size), border=cv2.BORDER_CONSTANT, fill=WHITE)
    else:
        raise UserError(f"unknown template '{template}'; use one of {', '.join(TEMPLATES)}")
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
