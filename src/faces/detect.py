"""Face detection behind one protocol, with a registry so users can plug in their own backends.

A detector maps an RGB image to ``Face`` records: a box and, where the backend finds them, eye
centres and mouth corners in pixels (x right, y down, the image spanning [0, width] x
[0, height], so the centre of pixel (col, row) is (col + 0.5, row + 0.5): the toy faces'
convention). Two backends ship: ``dlib`` (HOG or CNN face detector and 68 landmarks, from the
``dlib-bin`` and ``face-recognition-models`` packages) and ``haar`` (OpenCV's bundled cascades:
boxes and eye centres only). ``auto``, the default, is the first of ``AUTO_ORDER`` whose packages
are installed. Other backends are registered with ``register_detector``; one that needs a model
file raises ``UserError`` naming the missing file and the key to set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from src.common.errors import UserError

Point = tuple[float, float]
LANDMARK_NAMES = ("left_eye", "right_eye", "mouth_left", "mouth_right")
"""Landmarks a backend may report; "left_eye" is the eye on the image's left."""


@dataclass
class Face:
    """One detected face: its box ``(x, y, width, height)`` in pixels and its known landmarks."""

    box: tuple[float, float, float, float]
    landmarks: dict[str, Point] = field(default_factory=dict)
    score: float = 1.0
    # All the points of a landmark model (N x 2, same convention; dlib: the 68 iBUG points).
    points: np.ndarray | None = None

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels: what a minimum face size is compared with."""
        return float(min(self.box[2], self.box[3]))

    def has(self, *names: str) -> bool:
        """Whether every landmark in ``names`` is known."""
        return all(name in self.landmarks for name in names)


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an RGB image (uint8 array H x W x 3 or a PIL image)."""

    def detect(self, image: np.ndarray | Image.Image) -> list[Face]:
        """The faces in ``image``, largest first."""
        ...


DetectorFactory = Callable[..., FaceDetector]
_REGISTRY: dict[str, DetectorFactory] = {}
_AVAILABLE: dict[str, Callable[[], bool]] = {}
AUTO = "auto"
# The backends ``auto`` tries, best first.
AUTO_ORDER = ("dlib", "haar")


def register_detector(
    name: str, factory: DetectorFactory, available: Callable[[], bool] | None = None
) -> None:
    """Make ``factory(**options)`` available as ``make_detector(name, **options)``.

    ``available`` tells ``auto`` whether the backend's packages and model files are installed.
    """
    _REGISTRY[name] = factory
    _AVAILABLE[name] = available or (lambda: True)


def detector_names() -> list[str]:
    """The registered backends' names, sorted."""
    return sorted(_REGISTRY)


def auto_detector_name() -> str:
    """The backend ``auto`` stands for: the first of ``AUTO_ORDER`` that is installed."""
    for name in AUTO_ORDER:
        if name in _REGISTRY and _AVAILABLE[name]():
            return name
    raise UserError(f"no face detector of {', '.join(AUTO_ORDER)} is installed; run make install")


def make_detector(name: str = AUTO, **options: Any) -> FaceDetector:
    """Build the registered backend ``name`` (``auto``: see ``AUTO_ORDER``) with its ``options``.

    ``options`` go to the backend ``auto`` picks: give them with an explicit name.
    """
    if name == AUTO:
        name = auto_detector_name()
    if name not in _REGISTRY:
        raise UserError(
            f"unknown face detector '{name}'; known: {', '.join(detector_names())} "
            "(register others with src.faces.register_detector)"
        )
    return _REGISTRY[name](**options)


def require_model_file(path: str | os.PathLike[str] | None, backend: str, key: str) -> Path:
    """``path`` as a Path if the file exists; else a ``UserError`` naming it and ``key`` to set.

    For backends whose model files users provide (they are never downloaded).
    """
    if path is None or not Path(path).is_file():
        where = "is not set" if path is None else f"'{path}' does not exist"
        raise UserError(
            f"face detector '{backend}' needs its model file, which {where}; download it "
            f"yourself and set {key}=/path/to/file"
        )
    return Path(path)


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """``image`` as a contiguous uint8 H x W x 3 array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
