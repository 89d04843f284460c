"""Masks around faces: paste a processed crop back with a feathered edge, backgrounds to white.

``paste`` warps a processed crop back into the photo with the crop's kept transform and blends
it with a mask that fades out towards the crop's border, so no seam shows. ``white_background``
whitens everything but the person, as photo2cartoon's training data has it: OpenCV's GrabCut
seeded from the head box (offline, no model), or any segmentation function the user provides.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from src.faces.align import AlignedFace, warp

Segmenter = Callable[[np.ndarray], np.ndarray]
"""An RGB uint8 image -> a float foreground mask in 0..1 of the same height and width."""

DEFAULT_FEATHER = 0.12
"""Width of the feathered edge, as a share of the crop's side."""


def feather_mask(size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """A ``size`` square float mask: 1 inside, falling smoothly to 0 over ``feather`` * size."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(centres, size - centres)
    ramp = np.clip(edge / max(feather * size, 1e-6), 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    return np.minimum.outer(ramp, ramp).astype(np.float32)


def paste(
    photo: np.ndarray,
    crop: np.ndarray,
    aligned: AlignedFace,
    feather: float = DEFAULT_FEATHER,
) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` with ``crop`` (a processed ``aligned.image``) blended back in; and the mask used.

    ``crop`` may have another size than the aligned crop (a generator working at its own size).
    A crop whose background was whitened is pasted only where its person is
    (``aligned.foreground``), so no white square lands in the photo.
    """
    height, width = photo.shape[:2]
    side = crop.shape[0]
    # Only the photo region the crop covers is resampled and blended.
    corners = aligned.to_photo(
        np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) * aligned.size
    )
    left, top = np.floor(corners.min(axis=0)).astype(int)
    right, bottom = np.ceil(corners.max(axis=0)).astype(int)
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    mask = np.zeros((height, width), np.float32)
    if right <= left or bottom <= top:
        return photo.copy(), mask
    region_to_photo = np.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]])
    to_crop = np.diag([side / aligned.size] * 2 + [1.0]) @ np.linalg.inv(aligned.matrix)
    to_crop = to_crop @ region_to_photo
    size = (right - left, bottom - top)
    back = warp(crop, to_crop, size, border=cv2.BORDER_REPLICATE)
    crop_mask = feather_mask(side, feather)
    if aligned.foreground is not None:
        crop_mask *= cv2.resize(aligned.foreground, (side, side), interpolation=cv2.INTER_LINEAR)
    region_mask = warp(crop_mask, to_crop, size, fill=0.0, interpolation=cv2.INTER_LINEAR)
    mask[top:bottom, left:right] = region_mask
    region = photo[top:bottom, left:right].astype(np.float32)
    weight = region_mask[..., None]
    blended = region * (1.0 - weight) + back.astype(np.float32) * weight
    out = photo.copy()
    out[top:bottom, left:right] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out, mask


def grabcut_foreground(
    image: np.ndarray, head_box: tuple[float, float, float, float], iterations: int = 4
) -> np.ndarray:
    """A 0..1 foreground mask of the person in ``image``, by GrabCut seeded from the head box.

    Seeds: the inner face box is certain foreground; the head with its hair and the shoulders
    below it probable foreground; a strip along the top and sides certain background; the rest
    probable background.
    """
    height, width = image.shape[:2]
    x, y, w, h = head_box
    seeds = np.full((height, width), cv2.GC_PR_BGD, dtype=np.uint8)
    strip = max(2, round(0.03 * max(height, width)))
    seeds[:strip], seeds[:, :strip], seeds[:, -strip:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    _fill(seeds, (x - 0.6 * w, y + 1.3 * h, x + 1.6 * w, height), cv2.GC_PR_FGD)
    centre = (round(x + w / 2), round(y + 0.35 * h))
    axes = (round(0.7 * w), round(0.95 * h))
    cv2.ellipse(seeds, centre, axes, 0, 0, 360, int(cv2.GC_PR_FGD), thickness=-1)
    _fill(seeds, (x + 0.2 * w, y + 0.2 * h, x + 0.8 * w, y + 0.9 * h), cv2.GC_FGD)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    cv2.grabCut(
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        seeds,
        None,
        background,
        foreground,
        iterations,
        cv2.GC_INIT_WITH_MASK,
    )
    mask = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=max(1.0, 0.005 * max(height, width)))


def _fill(seeds: np.ndarray, corners: tuple[float, float, float, float], value: int) -> None:
    height, width = seeds.shape
    left, top = max(0, round(corners[0])), max(0, round(corners[1]))
    right, bottom = min(width, round(corners[2])), min(height, round(corners[3]))
    seeds[top:bottom, left:right] = value


def white_background(
    image: np.ndarray,
    head_box: tuple[float, float, float, float],
    segmenter: Segmenter | None = None,
) -> np.ndarray:
    """``image`` with everything but the person turned white (GrabCut unless ``segmenter``)."""
    return whiten(image, foreground_mask(image, head_box, segmenter))


def foreground_mask(
    image: np.ndarray,
    head_box: tuple[float, float, float, float],
    segmenter: Segmenter | None = None,
) -> np.ndarray:
    """The person's 0..1 float mask: ``segmenter(image)``, or GrabCut from the head box."""
    mask = segmenter(image) if segmenter is not None else grabcut_foreground(image, head_box)
    return np.clip(mask.astype(np.float32), 0.0, 1.0)


def whiten(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """``image`` blended to white where ``foreground`` (0..1) is 0."""
    mask = foreground[..., None]
    whitened = image.astype(np.float32) * mask + 255.0 * (1.0 - mask)
    return np.clip(np.rint(whitened), 0, 255).astype(np.uint8)


def crop_box(aligned: AlignedFace) -> tuple[float, float, float, float]:
    """The detected face box in the crop's coordinates (its axis-aligned bounds)."""
    x, y, w, h = aligned.face.box
    corners = aligned.to_crop(np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]]))
    low, high = corners.min(axis=0), corners.max(axis=0)
    return float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])
