"""Toy faces: procedural face images in a photo and a cartoon style, deterministic by seed.

The project's default data: no files to download, exact landmarks, and obviously bad samples
for the good/bad classifier. numpy and Pillow only, so it imports fast (no torch).
"""

from src.common.toyfaces.render import (
    CARTOON_EYE_SCALE,
    DEFECT_KINDS,
    DEFECT_TARGETS,
    HAIR_STYLES,
    LANDMARK_CONVENTION,
    LANDMARK_NAMES,
    MAX_SIZE,
    MIN_SIZE,
    STYLES,
    Defect,
    FaceParams,
    ToyFace,
    face_rng,
    landmarks,
    make_face,
    photo_defect,
    render,
    render_masks,
    sample_defect,
    sample_face,
    sample_params,
    stream_code,
)
from src.common.toyfaces.writer import is_bad, write_toyfaces

__all__ = [
    "CARTOON_EYE_SCALE",
    "DEFECT_KINDS",
    "DEFECT_TARGETS",
    "HAIR_STYLES",
    "LANDMARK_CONVENTION",
    "LANDMARK_NAMES",
    "MAX_SIZE",
    "MIN_SIZE",
    "STYLES",
    "Defect",
    "FaceParams",
    "ToyFace",
    "face_rng",
    "is_bad",
    "landmarks",
    "make_face",
    "photo_defect",
    "render",
    "render_masks",
    "sample_defect",
    "sample_face",
    "sample_params",
    "stream_code",
    "write_toyfaces",
]
