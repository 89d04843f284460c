"""photo2cartoon's face-ID loss, which lives in :mod:`src.common.faceid` (shared with the latent
tools); kept importable here for code that names this module."""

from src.common.faceid import FaceIdLoss, MobileFaceNet, face_crop

__all__ = ["FaceIdLoss", "MobileFaceNet", "face_crop"]
