"""Faces in photos: detection (pluggable backends), alignment to the training templates, masks.

``make_detector()`` gives the best installed backend (``dlib``'s 68 landmarks, else OpenCV's Haar
cascades); ``crop_faces`` runs detection and alignment for a whole photo; ``paste`` puts processed
crops back.
"""

from src.faces import dlib68 as _dlib68  # noqa: F401  (registers the "dlib" backend)
from src.faces import haar as _haar  # noqa: F401  (registers the "haar" backend)
from src.faces.align import TEMPLATES, AlignedFace, align_face, ffhq_matrix, photo2cartoon_matrix
from src.faces.crops import SkippedFace, align_faces, crop_faces
from src.faces.detect import (
    Face,
    FaceDetector,
    auto_detector_name,
    detector_names,
    make_detector,
    register_detector,
    require_model_file,
)
from src.faces.masks import (
    feather_mask,
    foreground_mask,
    grabcut_foreground,
    paste,
    white_background,
)

__all__ = [
    "TEMPLATES",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "SkippedFace",
    "align_face",
    "align_faces",
    "auto_detector_name",
    "crop_faces",
    "detector_names",
    "feather_mask",
    "ffhq_matrix",
    "foreground_mask",
    "grabcut_foreground",
    "make_detector",
    "paste",
    "photo2cartoon_matrix",
    "register_detector",
    "require_model_file",
    "white_background",
]
