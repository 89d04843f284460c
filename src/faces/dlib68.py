"""The ``dlib`` face detector: dlib's HOG (default) or CNN face detector and its 68 landmarks.

Needs ``dlib-bin`` (prebuilt dlib) and ``face-recognition-models`` (dlib's model files, about
100 MB, installed from the package registry like any dependency: nothing is downloaded at run
time). Each face carries the 68 points of the iBUG scheme (``Face.points``) and the four named
landmarks the alignment uses, as the FFHQ script takes them: each eye centre is the mean of its
six points (36-41 on the image's left, 42-47 on its right), the mouth corners are points 48 and
54. dlib reports integer pixel indices (pixel centres); they are shifted by half a pixel to the
pixel-area convention of ``src.faces.detect``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from src.common.errors import UserError
from src.faces.detect import Face, register_detector, require_model_file, to_rgb_array

LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODELS = ("hog", "cnn")
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def models_dir() -> Path | None:
    """The model folder of the installed ``face_recognition_models`` package, or None.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_available() -> bool:
    """Whether dlib imports and the 68-point model file is installed."""
    folder = models_dir()
    return (
        importlib.util.find_spec("dlib") is not None
        and folder is not None
        and (folder / LANDMARKS_FILE).is_file()
    )


def model_file(path: str | os.PathLike[str] | None, name: str, key: str) -> Path:
    """``path``, or the installed package's ``name``; a ``UserError`` naming ``key`` if missing."""
    if path is None:
        folder = models_dir()
        if folder is None:
            raise UserError(
                f"face detector 'dlib' needs {name}: install face-recognition-models "
                f"(make install) or set {key}=/path/to/{name}"
            )
        path = folder / name
    return require_model_file(path, "dlib", key)


def import_dlib() -> Any:
    """The ``dlib`` module, or a ``UserError`` saying how to install it."""
    try:
        import dlib
    except ImportError as err:
        raise UserError(
            "face detector 'dlib' needs the dlib package: install dlib-bin (make install) or "
            "use detector.name=haar"
        ) from err
    return dlib


@lru_cache(maxsize=4)
def _load(kind: str, path: str) -> Any:
    """dlib models are slow to load (the 68-point one is 100 MB): one instance per file."""
    dlib = import_dlib()
    loaders = {
        "hog": lambda _: dlib.get_frontal_face_detector(),
        "cnn": dlib.cnn_face_detection_model_v1,
        "shape": dlib.shape_predictor,
        "descriptor": dlib.face_recognition_model_v1,
    }
    return loaders[kind](path)


def load_model(kind: str, path: Path) -> Any:
    """The dlib model ``kind`` (hog, cnn, shape, descriptor) read from ``path`` (cached)."""
    return _load(kind, str(path))


def shape_to_points(shape: Any) -> np.ndarray:
    """A dlib ``full_object_detection`` as an N x 2 float array in the pixel-area convention."""
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


def named_landmarks(points: np.ndarray) -> dict[str, tuple[float, float]]:
    """Eye centres (means of the six eye points) and mouth corners (48, 54) of 68 points."""
    left, right = points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
    return {
        "left_eye": (float(left[0]), float(left[1])),
        "right_eye": (float(right[0]), float(right[1])),
        "mouth_left": (float(points[MOUTH_LEFT][0]), float(points[MOUTH_LEFT][1])),
        "mouth_right": (float(points[MOUTH_RIGHT][0]), float(points[MOUTH_RIGHT][1])),
    }


class DlibDetector:
    """Faces with dlib's HOG or CNN detector, each with the 68 landmarks (see the module doc)."""

    def __init__(
        self,
        model: str = "hog",
        upsample: int = 1,
        max_side: int = 1024,
        landmarks_file: str | os.PathLike[str] | None = None,
        cnn_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if model not in MODELS:
            raise UserError(f"detector.options.model={model} is unknown; use one of hog, cnn")
        self.model = model
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        shape_path = model_file(landmarks_file, LANDMARKS_FILE, "detector.options.landmarks_file")
        self.predictor = load_model("shape", shape_path)
        if model == "cnn":
            cnn_path = model_file(cnn_file, CNN_FILE, "detector.options.cnn_file")
            self.finder = load_model("cnn", cnn_path)
        else:
            self.finder = _load("hog", "")

    def detect(self, image: np.ndarray | Image.Image) -> list[Face]:
        """Faces in ``image``, largest first, each with 68 points and the named landmarks."""
        dlib = import_dlib()
        pixels = to_rgb_array(image)
        shrink = min(1.0, self.max_side / max(pixels.shape[:2]))
        small = pixels
        if shrink < 1.0:
            size = (round(pixels.shape[1] * shrink), round(pixels.shape[0] * shrink))
            small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
        found = self.finder(small, self.upsample)
        faces = []
        for item in found:
            rect = item.rect if self.model == "cnn" else item
            score = float(item.confidence) if self.model == "cnn" else 1.0
            left, top = rect.left() / shrink, rect.top() / shrink
            right, bottom = (rect.right() + 1) / shrink, (rect.bottom() + 1) / shrink
            full = dlib.rectangle(round(left), round(top), round(right) - 1, round(bottom) - 1)
            points = shape_to_points(self.predictor(pixels, full))
            faces.append(
                Face(
                    box=(left, top, right - left, bottom - top),
                    landmarks=named_landmarks(points),
                    score=score,
                    points=points,
                )
            )
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])


register_detector("dlib", DlibDetector, dlib_available)
