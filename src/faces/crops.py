"""From a photo to the face crops a generator takes: detect, skip the too small, align, whiten."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from src.faces.align import AlignedFace, Template, align_face
from src.faces.detect import Face, FaceDetector, to_rgb_array
from src.faces.masks import Segmenter, crop_box, foreground_mask, whiten


@dataclass
class SkippedFace:
    """A detected face left out, and why (said to the user)."""

    face: Face
    reason: str


def crop_faces(
    image: np.ndarray | Image.Image,
    detector: FaceDetector,
    size: int,
    *,
    template: Template = "ffhq",
    min_face: int = 48,
    max_faces: int | None = None,
    white: bool = False,
    segmenter: Segmenter | None = None,
) -> tuple[list[AlignedFace], list[SkippedFace]]:
    """Every face of ``image`` at least ``min_face`` pixels, aligned to ``template``.

    Faces come largest first; beyond ``max_faces`` and below ``min_face`` they are skipped with
    a reason. ``white`` turns each crop's background white (GrabCut or ``segmenter``).
    """
    pixels = to_rgb_array(image)
    return align_faces(
        pixels,
        detector.detect(pixels),
        size,
        template=template,
        min_face=min_face,
        max_faces=max_faces,
        white=white,
        segmenter=segmenter,
    )


def align_faces(
    pixels: np.ndarray,
    faces: list[Face],
    size: int,
    *,
    template: Template = "ffhq",
    min_face: int = 48,
    max_faces: int | None = None,
    white: bool = False,
    segmenter: Segmenter | None = None,
) -> tuple[list[AlignedFace], list[SkippedFace]]:
    """``crop_faces`` for faces already detected in the RGB array ``pixels``."""
    aligned: list[AlignedFace] = []
    skipped: list[SkippedFace] = []
    for face in faces:
        if face.size < min_face:
            reason = f"face of {face.size:.0f} px is below the minimum of {min_face} px"
            skipped.append(SkippedFace(face, reason))
            continue
        if max_faces is not None and len(aligned) >= max_faces:
            skipped.append(SkippedFace(face, f"more than {max_faces} faces in the photo"))
            continue
        crop = align_face(pixels, face, size, template)
        if white:
            crop.foreground = foreground_mask(crop.image, crop_box(crop), segmenter)
            crop.image = whiten(crop.image, crop.foreground)
        aligned.append(crop)
    return aligned, skipped
