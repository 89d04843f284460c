"""Procedural toy faces: parameters, photo and cartoon rendering, exact landmarks, defects.

Every shape is a signed distance function (SDF) evaluated in a normalised face frame (u right,
v down; the image spans [-1, 1] on both axes at the neutral pose) and anti-aliased analytically
(coverage = clip(0.5 - sdf / width, 0, 1)), so one face renders the same at any size from 32 to
256 px and its landmarks are known exactly. The pose (roll, shift, scale) is a similarity
transform from the face frame to pixels. Only numpy and Pillow: the package must import fast
and render thousands of images a minute on one CPU core.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from src.common.errors import UserError

MIN_SIZE = 32
MAX_SIZE = 256
STYLES = ("photo", "cartoon")
HAIR_STYLES = ("short", "long", "bob", "bangs", "curly", "bald")
DEFECT_KINDS = ("melted", "warped", "missing", "glitch")
DEFECT_TARGETS = ("both", "cartoon")
LANDMARK_NAMES = ("left_eye", "right_eye", "mouth_left", "mouth_right")
LANDMARK_CONVENTION = (
    "(x, y) in pixels, x right, y down; the image spans [0, size] on both axes, so the centre "
    "of pixel (col, row) is (col + 0.5, row + 0.5)"
)
CARTOON_EYE_SCALE = 1.3
"""Cartoon eyes are this much larger than photo eyes, around the same centres."""
TRIM_PIXELS = 2048
"""Shapes evaluated over more pixels than this are painted only within their bounding box."""
MOUTH_OPENING = 0.03
"""How far (face units) a fully open mouth parts the lips, on each side of the midline."""

Color = tuple[float, float, float]
Coords = np.ndarray
Window = tuple[slice, slice]

# Fixed colours as (3, 1, 1) arrays, to broadcast over the channel-first canvas.
OUTLINE = np.array([0.12, 0.08, 0.08], dtype=np.float32).reshape(3, 1, 1)
LASHES = np.array([0.10, 0.07, 0.06], dtype=np.float32).reshape(3, 1, 1)
PUPIL = np.array([0.04, 0.03, 0.03], dtype=np.float32).reshape(3, 1, 1)
WHITE = np.ones((3, 1, 1), dtype=np.float32)
MOUTH_INSIDE = np.array([0.28, 0.07, 0.08], dtype=np.float32).reshape(3, 1, 1)
TEETH = np.array([0.93, 0.91, 0.86], dtype=np.float32).reshape(3, 1, 1)
BLUSH = np.array([0.9, 0.3, 0.3], dtype=np.float32).reshape(3, 1, 1)

SKIN_TONES = np.array(
    [
        [0.98, 0.87, 0.80],
        [0.95, 0.78, 0.67],
        [0.89, 0.69, 0.55],
        [0.79, 0.56, 0.42],
        [0.65, 0.43, 0.30],
        [0.49, 0.31, 0.21],
        [0.35, 0.22, 0.16],
    ]
)
NATURAL_HAIR = {
    "black": ((0.09, 0.08, 0.08), 0.22),
    "dark brown": ((0.22, 0.14, 0.10), 0.20),
    "brown": ((0.38, 0.25, 0.16), 0.14),
    "light brown": ((0.55, 0.39, 0.25), 0.09),
    "dark blond": ((0.68, 0.53, 0.32), 0.07),
    "blond": ((0.86, 0.73, 0.46), 0.09),
    "red": ((0.62, 0.26, 0.12), 0.05),
    "ginger": ((0.78, 0.42, 0.18), 0.04),
    "grey": ((0.58, 0.57, 0.56), 0.06),
    "white": ((0.85, 0.84, 0.82), 0.04),
}
DYED_HAIR = ((0.86, 0.33, 0.62), (0.25, 0.38, 0.82), (0.48, 0.25, 0.70), (0.22, 0.64, 0.40))
DYED_HAIR_PROBABILITY = 0.06
IRIS_COLORS = (
    ((0.38, 0.22, 0.12), 0.35),
    ((0.22, 0.13, 0.08), 0.25),
    ((0.50, 0.40, 0.20), 0.10),
    ((0.30, 0.48, 0.30), 0.10),
    ((0.28, 0.45, 0.70), 0.14),
    ((0.48, 0.53, 0.58), 0.06),
)
HAIR_STYLE_WEIGHTS = (0.22, 0.20, 0.16, 0.14, 0.14, 0.14)
LIPSTICKS = ((0.75, 0.10, 0.15), (0.80, 0.35, 0.50), (0.50, 0.12, 0.25))


@dataclass(frozen=True)
class FaceParams:
    """Everything that makes one toy face.

    Lengths are in face-frame units (u right, v down; the image is 2 units wide at the neutral
    pose) and feature positions are relative to the head centre; colours are RGB in [0, 1].
    ``texture_seed`` seeds the photo's noise; ``eye_level`` puts the eyes below the head centre
    and ``mouth_drop`` the mouth below the eyes; ``gaze`` moves the irises by fractions of the
    eye size; ``brow_tilt`` > 0 raises the brows' outer ends; ``mouth_curve`` runs from -1
    (frown) to 1 (smile) and ``mouth_open`` from 0 (closed) to 1; ``light`` points towards the
    light (x right, y down, z to the viewer); ``roll_degrees`` > 0 turns the face clockwise
    and ``scale`` > 1 enlarges it.
    """

    texture_seed: int
    head_center: tuple[float, float]
    head_half_width: float
    head_top: float
    head_bottom: float
    jaw_narrowing: float
    skin: Color
    eye_spacing: float
    eye_level: float
    eye_half_width: float
    eye_openness: float
    iris: Color
    gaze: tuple[float, float]
    brow_gap: float
    brow_thickness: float
    brow_arch: float
    brow_tilt: float
    brow_color: Color
    nose_length: float
    nose_width: float
    mouth_drop: float
    mouth_half_width: float
    mouth_curve: float
    mouth_open: float
    upper_lip: float
    lower_lip: float
    lip_color: Color
    hair_style: str
    hair_color: Color
    hair_volume: float
    neck_half_width: float
    clothing: Color
    background: Color
    background_end: Color
    background_angle: float
    roll_degrees: float
    shift: tuple[float, float]
    scale: float
    light: tuple[float, float, float]
    light_strength: float
    ambient: float


@dataclass(frozen=True)
class Defect:
    """What makes a sample obviously bad; its details come from ``seed``, so it is reproducible.

    ``target`` is "both" (a bad face: photo and cartoon both broken) or "cartoon" (a good photo
    whose cartoon is broken).
    """

    kind: str
    target: str
    seed: int
    strength: float


@dataclass(frozen=True, eq=False)
class ToyFace:
    """One face in both styles, with its landmarks (pixels, see ``LANDMARK_CONVENTION``)."""

    photo: np.ndarray
    cartoon: np.ndarray
    landmarks: dict[str, tuple[float, float]]
    params: FaceParams
    defect: Defect | None


def stream_code(stream: str) -> int:
    """A stable integer per stream name, so every stream gets its own random faces."""
    return zlib.crc32(stream.encode("utf-8"))


def face_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of face ``index`` of ``stream``: it depends on nothing else."""
    return np.random.default_rng([seed, stream_code(stream), index])


def make_face(seed: int, stream: str, index: int, size: int, bad: bool = False) -> ToyFace:
    """Face ``index`` of ``stream`` in both styles; ``bad`` adds a defect to the same face."""
    params, defect = sample_face(seed, stream, index, bad)
    return ToyFace(
        photo=render(params, "photo", size, photo_defect(defect)),
        cartoon=render(params, "cartoon", size, defect),
        landmarks=landmarks(params, size),
        params=params,
        defect=defect,
    )


def sample_face(seed: int, stream: str, index: int, bad: bool) -> tuple[FaceParams, Defect | None]:
    """Parameters (and the defect when ``bad``) of face ``index`` of ``stream``, not rendered.

    The defect is drawn after the parameters, so a bad face is the good face plus a defect.
    """
    rng = face_rng(seed, stream, index)
    params = sample_params(rng)
    return params, sample_defect(rng) if bad else None


def photo_defect(defect: Defect | None) -> Defect | None:
    """The defect the photo gets: the cartoon's, unless it targets the cartoon alone."""
    return defect if defect is not None and defect.target == "both" else None


def _pick(rng: np.random.Generator, weights: tuple[float, ...] | list[float]) -> int:
    probabilities = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def _color(values: np.ndarray | tuple[float, ...] | list[float]) -> Color:
    r, g, b = (float(np.clip(c, 0.0, 1.0)) for c in values)
    return (r, g, b)


def _hsv(h: float, s: float, v: float) -> Color:
    return colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v))


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw a random face: head, skin, eyes, brows, nose, mouth, hair, clothes, pose, light."""
    u = rng.uniform
    tone = u(0, len(SKIN_TONES) - 1)
    low = int(tone)
    skin = SKIN_TONES[low] + (tone - low) * (
        SKIN_TONES[min(low + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[low]
    )
    skin = skin * u(0.97, 1.03, 3) * u(0.95, 1.04)

    names = list(NATURAL_HAIR)
    natural_name = names[_pick(rng, [w for _, w in NATURAL_HAIR.values()])]
    natural = np.array(NATURAL_HAIR[natural_name][0]) * u(0.9, 1.1)
    dyed = u() < DYED_HAIR_PROBABILITY
    hair = np.array(DYED_HAIR[int(rng.integers(len(DYED_HAIR)))]) if dyed else natural
    if dyed or natural_name in ("grey", "white"):
        brow = np.array(NATURAL_HAIR["dark brown"][0]) * u(0.6, 1.4)
    else:
        brow = natural * 0.75

    lips = np.array(skin) * np.array([0.85, 0.58, 0.60]) + np.array([0.12, 0.02, 0.03])
    if u() < 0.15:
        lips = 0.4 * lips + 0.6 * np.array(LIPSTICKS[int(rng.integers(len(LIPSTICKS)))])
    iris_weights = [w for _, w in IRIS_COLORS]
    if tone > 3:
        iris_weights = [w if i < 2 else w * 0.15 for i, w in enumerate(iris_weights)]
    iris = IRIS_COLORS[_pick(rng, iris_weights)][0]

    bg_hue = u()
    background = _hsv(bg_hue, u(0.05, 0.45), u(0.55, 0.95))
    background_end = _hsv(bg_hue + u(-0.08, 0.08), u(0.05, 0.45), u(0.35, 0.85))

    hair_style = HAIR_STYLES[_pick(rng, HAIR_STYLE_WEIGHTS)]
    elevation = math.radians(u(25, 55))
    azimuth = math.radians(u(-75, 75))
    light = (
        math.sin(elevation) * math.sin(azimuth),
        -math.sin(elevation) * math.cos(azimuth),
        math.cos(elevation),
    )
    mouth_open = 0.0 if u() < 0.6 else u(0.3, 1.0)
    return FaceParams(
        texture_seed=int(rng.integers(2**31)),
        head_center=(0.0, float(u(-0.12, -0.06))),
        head_half_width=float(u(0.36, 0.44)),
        head_top=float(u(0.50, 0.56)),
        head_bottom=float(u(0.56, 0.64)),
        jaw_narrowing=float(u(0.12, 0.38)),
        skin=_color(skin),
        eye_spacing=float(u(0.15, 0.18)),
        eye_level=float(u(0.0, 0.05)),
        eye_half_width=float(u(0.07, 0.085)),
        eye_openness=float(u(0.42, 0.58)),
        iris=_color(np.array(iris) * u(0.85, 1.15)),
        gaze=(float(u(-1, 1)), float(u(-1, 1))),
        brow_gap=float(u(0.075, 0.10)),
        brow_thickness=float(u(0.011, 0.02)),
        brow_arch=float(u(0.0, 1.0)),
        brow_tilt=float(u(-0.1, 0.2)),
        brow_color=_color(brow),
        nose_length=float(u(0.15, 0.20)),
        nose_width=float(u(0.035, 0.055)),
        mouth_drop=float(u(0.29, 0.34)),
        mouth_half_width=float(u(0.085, 0.13)),
        mouth_curve=float(u(-0.5, 1.0)),
        mouth_open=float(mouth_open),
        upper_lip=float(u(0.011, 0.02)),
        lower_lip=float(u(0.015, 0.026)),
        lip_color=_color(lips),
        hair_style=hair_style,
        hair_color=_color(hair),
        hair_volume=float(u(0.09, 0.15) if hair_style == "curly" else u(0.02, 0.06)),
        neck_half_width=float(u(0.14, 0.19)),
        clothing=_hsv(u(), u(0.2, 0.8), u(0.2, 0.85)),
        background=background,
        background_end=background_end,
        background_angle=float(u(0, 2 * math.pi)),
        roll_degrees=float(np.clip(rng.normal(0, 4), -8, 8)),
        shift=(float(u(-0.05, 0.05)), float(u(-0.05, 0.05))),
        scale=float(u(1.0, 1.14)),
        light=light,
        light_strength=float(u(0.45, 0.7)),
        ambient=float(u(0.45, 0.6)),
    )


def sample_defect(rng: np.random.Generator) -> Defect:
    """Draw a defect: one of ``DEFECT_KINDS``; it breaks the photo too in about 70% of cases."""
    kind = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))]
    target = "both" if rng.uniform() < 0.7 else "cartoon"
    return Defect(
        kind=kind,
        target=target,
        seed=int(rng.integers(2**31)),
        strength=float(rng.uniform(0.8, 1.0)),
    )


# --- geometry shared by the renderer, the masks and the landmarks --------------------------------


def _eye_centres(p: FaceParams) -> tuple[tuple[float, float], tuple[float, float]]:
    """Face-frame centres of the eye on the image's left, then the one on its right."""
    cu, cv = p.head_center
    v = cv + p.eye_level
    return (cu - p.eye_spacing, v), (cu + p.eye_spacing, v)


def _eye_size(p: FaceParams, cartoon: bool) -> tuple[float, float]:
    """Half width and half height of the eye shape."""
    w = p.eye_half_width * (CARTOON_EYE_SCALE if cartoon else 1.0)
    return w, w * p.eye_openness


def _mouth_geometry(p: FaceParams) -> tuple[float, float, float, float]:
    """Mouth centre (u, v), half width and the curvature of its midline v = k * x**2."""
    cu, cv = p.head_center
    half = p.mouth_half_width
    return cu, cv + p.eye_level + p.mouth_drop, half, -p.mouth_curve * 0.45 / half


def _mouth_corners(p: FaceParams) -> tuple[tuple[float, float], tuple[float, float]]:
    mu, mv, half, curve = _mouth_geometry(p)
    corner_v = mv + curve * half * half
    return (mu - half, corner_v), (mu + half, corner_v)


def _pose(p: FaceParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset of the similarity transform from the face frame to pixels."""
    half = size / 2
    angle = math.radians(p.roll_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = half * p.scale * np.array([[cos, -sin], [sin, cos]])
    offset = half * (1.0 + np.array(p.shift))
    return matrix, offset


def landmarks(params: FaceParams, size: int) -> dict[str, tuple[float, float]]:
    """Eye centres and mouth corners in pixels (``LANDMARK_CONVENTION``), the same in both styles.

    "left_eye" is the eye on the image's left; the eye centre is the centre of the eye shape and
    the mouth corners are the ends of the mouth shape.
    """
    _check_size(size)
    matrix, offset = _pose(params, size)
    points = (*_eye_centres(params), *_mouth_corners(params))
    result = {}
    for name, point in zip(LANDMARK_NAMES, points, strict=True):
        x, y = matrix @ np.array(point) + offset
        result[name] = (float(x), float(y))
    return result


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise UserError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"size={size} is out of range: set size to {MIN_SIZE}..{MAX_SIZE}")


# --- signed distance functions (negative inside) -----------------------------------------------


def _coverage(sdf: np.ndarray, width: float) -> np.ndarray:
    """Analytic anti-aliasing: the share of a pixel ``width`` wide inside the shape."""
    cover = 0.5 - sdf * (1.0 / width)
    return np.minimum(np.maximum(cover, 0.0, out=cover), 1.0, out=cover)


def _ellipse(x: Coords, y: Coords, a: float | np.ndarray, b: float | np.ndarray) -> np.ndarray:
    """Approximate distance to an axis-aligned ellipse centred at the origin (exact on it)."""
    nx, ny = x / a, y / b
    k0 = np.sqrt(nx * nx + ny * ny)
    k1 = np.sqrt((nx / a) ** 2 + (ny / b) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _circle(x: Coords, y: Coords, radius: float) -> np.ndarray:
    return np.sqrt(x * x + y * y) - radius


def _box(x: Coords, y: Coords, half_w: float, half_h: float, radius: float) -> np.ndarray:
    """Rounded box centred at the origin."""
    qx = np.abs(x) - half_w + radius
    qy = np.abs(y) - half_h + radius
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius


def _almond_arcs(x: Coords, y: Coords, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The two circles whose intersection is an almond (eye) of half size ``w`` x ``h``.

    The first one's arc is the upper lid, the second one's the lower lid.
    """
    radius = (w * w + h * h) / (2 * h)
    offset = radius - h
    return _circle(x, y - offset, radius), _circle(x, y + offset, radius)


def _almond(x: Coords, y: Coords, w: float, h: float) -> np.ndarray:
    upper, lower = _almond_arcs(x, y, w, h)
    return np.maximum(upper, lower)


def _arc_stroke(
    x: Coords, y: Coords, half_len: float, curve: float, half_thick: float | np.ndarray
) -> np.ndarray:
    """A stroke along the parabola y = curve * x**2 for |x| <= half_len, with round ends."""
    xc = np.clip(x, -half_len, half_len)
    dy = (y - curve * xc * xc) / np.sqrt(1.0 + (2.0 * curve * xc) ** 2)
    return np.sqrt((x - xc) ** 2 + dy * dy) - half_thick


def _lens(
    x: Coords, y: Coords, half_len: float, curve: float, above: float, below: float
) -> np.ndarray:
    """Region between v = curve*x**2 - above*profile and v = curve*x**2 + below*profile.

    The profile (1 - (x / half_len)**2) ** 0.6 closes the shape at x = +-half_len: its ends.
    """
    t = np.clip(x / half_len, -1.0, 1.0)
    profile = (1.0 - t * t) ** 0.6
    mid = curve * x * x
    return np.maximum(
        np.maximum(mid - above * profile - y, y - mid - below * profile),
        np.abs(x) - half_len,
    )


def _head_sdf(p: FaceParams, u: Coords, v: Coords) -> np.ndarray:
    """An ellipse with a longer lower half that narrows towards the chin."""
    cu, cv = p.head_center
    dy = v - cv
    t = np.clip(dy / p.head_bottom, 0.0, 1.0)
    half_w = p.head_half_width * (1.0 - p.jaw_narrowing * t * t)
    half_h = np.where(dy < 0, np.float32(p.head_top), np.float32(p.head_bottom))
    return _ellipse(u - cu, dy, half_w, half_h)


def _mouth_sdf(p: FaceParams, u: Coords, v: Coords) -> np.ndarray:
    mu, mv, half, curve = _mouth_geometry(p)
    opening = p.mouth_open * MOUTH_OPENING
    return _lens(u - mu, v - mv, half, curve, p.upper_lip + opening, p.lower_lip + opening)


def _feature_edge(pixel: float, cartoon: bool) -> float:
    """Anti-aliasing width of eyes, brows and mouth, in face units (softer for photos)."""
    return pixel * (1.0 if cartoon else 1.3)


# --- sampling frame -----------------------------------------------------------------------------


class _Frame:
    """Face-frame coordinates of every pixel centre, possibly displaced by a defect."""

    def __init__(
        self,
        params: FaceParams,
        size: int,
        displacement: Callable[[Coords, Coords], tuple[Coords, Coords]] | None = None,
    ) -> None:
        self.size = size
        self.matrix, self.offset = _pose(params, size)
        inverse = np.linalg.inv(self.matrix).astype(np.float32)
        centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
        dx = (centres - np.float32(self.offset[0]))[None, :]
        dy = (centres - np.float32(self.offset[1]))[:, None]
        self.u = inverse[0, 0] * dx + inverse[0, 1] * dy
        self.v = inverse[1, 0] * dx + inverse[1, 1] * dy
        self.pixel = 2.0 / (size * params.scale)
        self.affine = displacement is None
        if displacement is not None:
            self.u, self.v = displacement(self.u, self.v)
        self.full: Window = (slice(0, size), slice(0, size))

    def window(self, u0: float, v0: float, u1: float, v1: float) -> Window | None:
        """Pixel rows and columns that can see the face-frame box, or None if none can."""
        if not self.affine:
            return self.full
        corners = np.array([[u0, u0, u1, u1], [v0, v1, v0, v1]])
        x, y = self.matrix @ corners + self.offset[:, None]
        c0, c1 = max(math.floor(x.min()) - 2, 0), min(math.ceil(x.max()) + 2, self.size)
        r0, r1 = max(math.floor(y.min()) - 2, 0), min(math.ceil(y.max()) + 2, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def coords(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return self.u[window], self.v[window]


# --- defects --------------------------------------------------------------------------------------


def _melt(defect: Defect, p: FaceParams) -> Callable[[Coords, Coords], tuple[Coords, Coords]]:
    """Stretch everything below brow level downwards, much more in a few dripping columns."""
    rng = np.random.default_rng(defect.seed)
    cu, cv = p.head_center
    start = cv + p.eye_level - p.brow_gap - rng.uniform(0.0, 0.08)
    sag = rng.uniform(0.25, 0.4) * defect.strength
    drips = [
        (rng.uniform(cu - 0.4, cu + 0.4), rng.uniform(0.025, 0.06), rng.uniform(0.25, 0.45))
        for _ in range(int(rng.integers(3, 7)))
    ]
    wobble = rng.uniform(0.01, 0.025)

    def displace(u: Coords, v: Coords) -> tuple[Coords, Coords]:
        squeeze = np.full_like(u, sag)
        for centre, width, amount in drips:
            squeeze += amount * defect.strength * np.exp(-(((u - centre) / width) ** 2))
        squeeze = np.minimum(squeeze, 0.85)
        depth = np.maximum(v - start, 0.0)
        return u + wobble * np.sin(v * 30.0) * np.minimum(depth * 4.0, 1.0), v - depth * squeeze

    return displace


def _warp(defect: Defect, p: FaceParams) -> Callable[[Coords, Coords], tuple[Coords, Coords]]:
    """A strong swirl around the face, or sinusoidal waves across it."""
    rng = np.random.default_rng(defect.seed)
    cu, cv = p.head_center
    if rng.uniform() < 0.5:
        centre_u = cu + rng.uniform(-0.1, 0.1)
        centre_v = cv + p.eye_level + rng.uniform(0.0, 0.2)
        radius = rng.uniform(0.35, 0.55)
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(2.2, 3.2) * defect.strength

        def swirl(u: Coords, v: Coords) -> tuple[Coords, Coords]:
            x, y = u - centre_u, v - centre_v
            angle = turn * np.exp(-(x * x + y * y) / (radius * radius))
            cos, sin = np.cos(angle), np.sin(angle)
            return centre_u + cos * x - sin * y, centre_v + sin * x + cos * y

        return swirl
    amplitude = rng.uniform(0.06, 0.09) * defect.strength
    wavelength = rng.uniform(0.25, 0.4)
    phase_u, phase_v = rng.uniform(0, 2 * math.pi, 2)
    k = 2 * math.pi / wavelength

    def waves(u: Coords, v: Coords) -> tuple[Coords, Coords]:
        return u + amplitude * np.sin(k * v + phase_u), v + amplitude * np.sin(k * u + phase_v)

    return waves


def _missing_parts(defect: Defect | None) -> frozenset[str]:
    """What a "missing" defect removes: always the eyes (with the brows), often the mouth too.

    A face without a mouth alone can pass for a minimalist drawing at 64 px; one without eyes
    cannot.
    """
    if defect is None or defect.kind != "missing":
        return frozenset()
    if np.random.default_rng(defect.seed).uniform() < 0.55:
        return frozenset({"eyes"})
    return frozenset({"eyes", "mouth"})


def _random_rect(
    rng: np.random.Generator, size: int, low: float, high: float, near_face: bool
) -> Window:
    """A rectangle with sides of ``low``..``high`` of the image, centred on the face if asked."""
    width, height = (int(size * rng.uniform(low, high)) + 1 for _ in range(2))
    if near_face:
        cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.4, 0.6)
    else:
        cx, cy = size * rng.uniform(0.1, 0.9), size * rng.uniform(0.1, 0.9)
    c0, r0 = max(int(cx - width / 2), 0), max(int(cy - height / 2), 0)
    return slice(r0, min(r0 + height, size)), slice(c0, min(c0 + width, size))


def _glitch(image: np.ndarray, defect: Defect) -> np.ndarray:
    """Digital corruption of a channel-first image: a large block over the face, and more.

    Blocks are solid random colours, posterised to two levels, or hue-rotated (channels
    permuted) and inverted; the other glitches shift a colour channel or rows of pixels sideways.
    """
    rng = np.random.default_rng(defect.seed)
    size = image.shape[1]
    out = image.copy()
    face_ops = ("colour block", "posterise", "hue rotation")
    others = (*face_ops, "channel shift", "scanlines")
    ops = [face_ops[int(rng.integers(3))]]
    ops += [others[int(i)] for i in rng.choice(len(others), int(rng.integers(1, 3)), replace=False)]
    for number, op in enumerate(ops):
        near_face = number == 0
        low, high = (0.35, 0.6) if near_face else (0.15, 0.4)
        if op == "colour block":
            for _ in range(1 if near_face else int(rng.integers(2, 4))):
                rows, columns = _random_rect(rng, size, low, high, near_face)
                colour = _hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
                out[:, rows, columns] = _rgb(colour)
        elif op == "posterise":
            rows, columns = _random_rect(rng, size, low, high, near_face)
            out[:, rows, columns] = np.where(out[:, rows, columns] > 0.45, 1.0, 0.0)
        elif op == "hue rotation":
            rows, columns = _random_rect(rng, size, low, high, near_face)
            out[:, rows, columns] = 1.0 - out[[2, 0, 1], rows, columns]
        elif op == "channel shift":
            channel = int(rng.integers(3))
            shift = int(size * rng.uniform(0.08, 0.15) * defect.strength) * int(rng.choice([-1, 1]))
            out[channel] = np.roll(out[channel], shift, axis=1)
        else:
            for _ in range(int(rng.integers(3, 6))):
                row = int(rng.integers(size))
                rows = slice(row, min(row + max(int(size * rng.uniform(0.03, 0.08)), 1), size))
                shift = int(size * rng.uniform(0.1, 0.3)) * int(rng.choice([-1, 1]))
                out[:, rows] = np.roll(out[:, rows], shift, axis=2)
    return out


# --- rendering ------------------------------------------------------------------------------------


def _rgb(color: Color | np.ndarray) -> np.ndarray:
    """A colour as a float32 (3, 1, 1) array, ready to broadcast over a channel-first image."""
    return np.asarray(color, dtype=np.float32).reshape(3, 1, 1)


def _smooth_noise(rng: np.random.Generator, size: int, rows: int, columns: int) -> np.ndarray:
    """Unit-variance noise, smooth over 1/rows of the image vertically, 1/columns horizontally."""
    coarse = rng.standard_normal((rows, columns), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))


class _Hair(NamedTuple):
    """Hair SDFs: behind the body (or None), in front of the head, and where the front ends."""

    back: np.ndarray | None
    front: np.ndarray
    front_end: float | None


class _Renderer:
    """Paints one face, back to front, onto a float canvas; photos also keep a shading layer.

    The canvas is channel-first (3, size, size): blending a colour into it then runs over long
    rows instead of 3-element pixels, several times faster in numpy.
    """

    def __init__(self, p: FaceParams, style: str, size: int, defect: Defect | None) -> None:
        self.p = p
        self.cartoon = style == "cartoon"
        self.defect = defect
        displacement = None
        if defect is not None and defect.kind == "melted":
            displacement = _melt(defect, p)
        elif defect is not None and defect.kind == "warped":
            displacement = _warp(defect, p)
        self.frame = _Frame(p, size, displacement)
        pixel = self.frame.pixel
        self.edge = _feature_edge(pixel, self.cartoon)
        self.soft = pixel if self.cartoon else max(1.6 * pixel, 0.018)
        self.line = max(0.55 * pixel, 0.0075)
        self.missing = _missing_parts(defect)
        self.color = np.empty((3, size, size), dtype=np.float32)
        self.shade = None if self.cartoon else np.ones((size, size), dtype=np.float32)
        self.skin = _rgb(p.skin)
        if not self.cartoon:
            texture = np.random.default_rng(p.texture_seed)
            self.grain = texture.standard_normal((size, size), dtype=np.float32)
            self.blotches = _smooth_noise(texture, size, 6, 6)
            curly = p.hair_style == "curly"
            self.strands = _smooth_noise(texture, size, 30 if curly else 3, 30 if curly else 40)
        light = np.array(p.light, dtype=np.float64)
        self.light = light / np.linalg.norm(light)

    # painting primitives

    def fill(
        self,
        window: Window,
        sdf: np.ndarray,
        color: np.ndarray,
        width: float,
        shade: np.ndarray | float | None = None,
    ) -> None:
        """Blend ``color`` (and, for photos, ``shade``) in where the shape covers the pixels.

        ``color`` is (3, 1, 1) or (3, h, w) over ``window``, ``shade`` a constant or (h, w);
        a shape evaluated over many pixels is painted only within its bounding box.
        """
        cover = _coverage(sdf, width)
        if cover.size > TRIM_PIXELS:
            rows = np.flatnonzero(cover.any(axis=1))
            if rows.size == 0:
                return
            columns = np.flatnonzero(cover.any(axis=0))
            inner = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
            cover = cover[inner]
            window = (
                slice(window[0].start + inner[0].start, window[0].start + inner[0].stop),
                slice(window[1].start + inner[1].start, window[1].start + inner[1].stop),
            )
            if color.shape[1:] != (1, 1):
                color = color[:, inner[0], inner[1]]
            if isinstance(shade, np.ndarray):
                shade = shade[inner]
        target = self.color[:, window[0], window[1]]
        target += cover * (color - target)
        if shade is not None and self.shade is not None:
            layer = self.shade[window]
            layer += cover * (shade - layer)

    def darken(self, window: Window, factor: np.ndarray) -> None:
        """Multiply the colours in ``window`` by ``factor`` (photo shadows and highlights)."""
        self.color[:, window[0], window[1]] *= factor

    def outline(self, window: Window, sdf: np.ndarray, scale: float = 1.0) -> None:
        """A dark line along the shape's edge (cartoon only)."""
        if self.cartoon:
            self.fill(window, np.abs(sdf) - self.line * scale, OUTLINE, self.edge)

    def lambert(self, nx: np.ndarray, ny: np.ndarray, dim: float = 1.0) -> np.ndarray:
        """Soft Lambert shading of a surface whose normal has image-plane part (nx, ny)."""
        nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
        lx, ly, lz = self.light
        lit = np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
        return dim * (self.p.ambient + self.p.light_strength * lit)

    def ellipsoid_shade(
        self, u: Coords, v: Coords, centre: tuple[float, float], a: float, b: float, dim: float
    ) -> np.ndarray:
        """Lambert shading of a (slightly flattened) ellipsoid with half axes ``a``, ``b``."""
        return self.lambert((u - centre[0]) / a * 0.9, (v - centre[1]) / b * 0.9, dim)

    # the parts of the picture, back to front

    def render(self) -> np.ndarray:
        portrait = self.portrait()
        u, v = self.frame.coords(portrait)
        head = _head_sdf(self.p, u, v)
        hair = self.hair_shapes(u, v, head)
        self.background()
        if hair is not None and hair.back is not None:
            self.hair(portrait, hair.back)
        self.body()
        if self.p.hair_style in ("short", "bald"):
            self.ears()
        self.head(portrait, head)
        if hair is not None:
            self.hair(portrait, hair.front, hair.front_end)
        if "eyes" not in self.missing:
            self.brows()
            self.eyes()
        self.nose()
        if "mouth" not in self.missing:
            self.mouth()
        image = self.finish()
        if self.defect is not None and self.defect.kind == "glitch":
            image = _glitch(image, self.defect)
        image *= 255.0
        image += 0.5
        planes = np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)
        return np.stack(tuple(planes), axis=-1)

    def portrait(self) -> Window:
        """The pixels that can see the head or the hair (all of them under a displacement)."""
        p = self.p
        cu, cv = p.head_center
        reach = p.head_half_width + p.hair_volume + 0.15
        bottom = 1.45 if p.hair_style == "long" else cv + p.head_bottom + 0.1
        window = self.frame.window(
            cu - reach, cv - p.head_top - p.hair_volume - 0.2, cu + reach, bottom
        )
        return self.frame.full if window is None else window

    def background(self) -> None:
        p = self.p
        start, end = _rgb(p.background), _rgb(p.background_end)
        if self.cartoon:
            self.color[:] = start
            return
        u, v = self.frame.u, self.frame.v
        along = u * math.cos(p.background_angle) + v * math.sin(p.background_angle)
        t = np.clip(0.5 + 0.45 * along, 0.0, 1.0)
        self.color[:] = start + t * (end - start)
        assert self.shade is not None
        self.shade[:] = 1.05 - 0.12 * (u * u + v * v)

    def hair_shapes(self, u: Coords, v: Coords, head: np.ndarray) -> _Hair | None:
        """SDFs of the hair behind the body and of the hair in front of the head."""
        p = self.p
        style = p.hair_style
        if style == "bald":
            return None
        cu, cv = p.head_center
        a, top, vol = p.head_half_width, p.head_top, p.hair_volume
        eye_v = cv + p.eye_level
        x = u - cu
        hairline_top = eye_v - p.brow_gap - 0.05 if style == "bangs" else cv - 0.55 * top
        hairline = hairline_top + (eye_v - 0.04 - hairline_top) * (x / a) ** 2
        if style == "bangs":
            hairline = hairline + 0.012 * np.abs(np.sin(x * 55.0))
        face = np.maximum(head, hairline - v)
        front_end = cv + (0.5 if style == "long" else 0.45) * p.head_bottom
        if style in ("long", "bob", "bangs"):
            # Locks over the sides of the face, drawn back before the front layer ends.
            side_open = 0.86 if style == "long" else 0.9
            opening = side_open + (1.1 - side_open) * np.clip((v - front_end + 0.15) / 0.13, 0, 1)
            face = np.maximum(face, np.abs(x) - a * opening)
        cap = _ellipse(x, v - (cv - 0.02), a + vol, top + vol)
        if style == "short":
            # The cut rises outside the skull so the hair hugs the head above the ears.
            cut = v - eye_v + 0.03 + 0.9 * np.maximum(np.abs(x) - 0.8 * a, 0.0)
            return _Hair(None, np.maximum(np.maximum(cap, cut), -face), None)
        if style == "curly":
            angle = np.arctan2(v - cv, x)
            bumps = 0.025 * (0.5 + 0.5 * np.sin(13.0 * angle))
            back = _ellipse(x, v - (cv + 0.02), a + vol, top + vol + 0.08) - bumps
            front_end = eye_v + 0.02
        else:
            bottom = 1.35 if style == "long" else cv + 0.8 * p.head_bottom
            half_w = a + vol + (0.07 if style == "long" else 0.05)
            body = _box(x, v - (cv + bottom) / 2, half_w, (bottom - cv) / 2, 0.1)
            back = np.minimum(cap, body)
        front = np.maximum(np.maximum(back, v - front_end), -face)
        return _Hair(back, front, front_end)

    def hair(self, window: Window, sdf: np.ndarray, cut: float | None = None) -> None:
        """One hair layer; ``cut`` is where a front layer ends over the back one (no outline)."""
        p = self.p
        color = _rgb(p.hair_color)
        u, v = self.frame.coords(window)
        if self.cartoon:
            self.fill(window, sdf, color, self.soft)
            line = np.abs(sdf) - self.line
            if cut is not None:
                line = np.maximum(line, v - cut + 3.0 * self.line)
            self.fill(window, line, OUTLINE, self.edge)
            return
        cu, cv = p.head_center
        reach = p.head_half_width + p.hair_volume
        shade = self.ellipsoid_shade(u, v, (cu, cv), reach * 1.2, p.head_top * 1.6, 0.9)
        ring = np.sqrt(((u - cu) / reach) ** 2 + ((v - cv) / p.head_top) ** 2)
        sheen = np.exp(-((ring - 0.85) ** 2) / 0.02)
        albedo = color * (1.0 + 0.12 * self.strands[window] + 0.25 * sheen)
        self.fill(window, sdf, albedo, self.soft, shade)

    def body(self) -> None:
        p = self.p
        cu, cv = p.head_center
        chin = cv + p.head_bottom
        shoulder = chin + 0.15
        neck_w = p.neck_half_width
        window = self.frame.window(-1.6, shoulder - 0.5, 1.6, 2.5)
        if window is None:
            return
        u, v = self.frame.coords(window)
        x = u - cu
        torso = _ellipse(x, v - (shoulder + 0.62), 0.98, 0.62)
        torso_shade = (
            None
            if self.cartoon
            else self.ellipsoid_shade(u, v, (cu, shoulder + 0.6), 1.1, 0.9, 0.95)
        )
        clothing = _rgb(p.clothing)
        if not self.cartoon:
            clothing = clothing * (1.0 + 0.05 * self.grain[window])
        self.fill(window, torso, clothing, self.soft, torso_shade)
        self.outline(window, torso)
        neck_top = cv + 0.3 * p.head_bottom
        neck = _box(
            x, v - (neck_top + shoulder + 0.06) / 2, neck_w, (shoulder + 0.06 - neck_top) / 2, 0.02
        )
        neck_shade = None
        if not self.cartoon:
            under_chin = np.clip((v - chin + 0.06) / 0.16, 0.0, 1.0)
            neck_shade = self.lambert(x / neck_w * 0.8, np.zeros_like(x), 0.85) * (
                0.6 + 0.4 * under_chin
            )
        self.fill(window, neck, self.skin, self.soft, neck_shade)
        self.outline(window, neck)
        neckline = np.maximum(_ellipse(x, v - shoulder, neck_w * 1.5, 0.13), torso)
        self.fill(
            window,
            neckline,
            self.skin,
            self.soft,
            None if neck_shade is None else neck_shade * 1.05,
        )
        if self.cartoon:
            self.fill(
                window,
                np.maximum(np.abs(neckline) - self.line, torso - self.line),
                OUTLINE,
                self.edge,
            )

    def ears(self) -> None:
        p = self.p
        cu, cv = p.head_center
        ear_v = cv + p.eye_level + 0.07
        t = min(max((ear_v - cv) / p.head_bottom, 0.0), 1.0)
        reach = p.head_half_width * (1.0 - p.jaw_narrowing * t * t) - 0.01
        for side in (-1.0, 1.0):
            ear_u = cu + side * reach
            window = self.frame.window(ear_u - 0.08, ear_v - 0.12, ear_u + 0.08, ear_v + 0.12)
            if window is None:
                continue
            u, v = self.frame.coords(window)
            ear = _ellipse(u - ear_u, v - ear_v, 0.045, 0.085)
            shade = (
                None
                if self.cartoon
                else self.lambert((u - ear_u) / 0.06 * 0.6, (v - ear_v) / 0.1 * 0.5, 0.9)
            )
            self.fill(window, ear, self.skin, self.soft, shade)
            self.outline(window, ear)
            inner = _ellipse(u - ear_u - side * 0.008, v - ear_v, 0.02, 0.05)
            if self.cartoon:
                self.fill(window, np.abs(inner) - self.line * 0.6, OUTLINE, self.edge)
            else:
                self.fill(window, inner, self.skin * 0.8, self.soft * 1.5)

    def head(self, window: Window, sdf: np.ndarray) -> None:
        p = self.p
        if self.cartoon:
            self.fill(window, sdf, self.skin, self.soft)
            self.outline(window, sdf)
            return
        u, v = self.frame.coords(window)
        cu, cv = p.head_center
        shade = self.ellipsoid_shade(u, v, (cu, cv), p.head_half_width, p.head_top * 1.1, 1.0)
        cheeks = np.exp(
            -(((np.abs(u - cu) - 0.2) / 0.08) ** 2 + ((v - cv - p.eye_level - 0.15) / 0.08) ** 2)
        )
        albedo = self.skin * (1.0 + 0.03 * self.blotches[window])
        albedo += (0.06 * cheeks) * (BLUSH - self.skin)
        self.fill(window, sdf, albedo, self.soft, shade)

    def brows(self) -> None:
        p = self.p
        color = _rgb(p.brow_color)
        half_len = p.eye_half_width * 1.2
        thick = p.brow_thickness * (1.2 if self.cartoon else 1.0)
        for side, (eye_u, eye_v) in zip((-1.0, 1.0), _eye_centres(p), strict=True):
            brow_u, brow_v = eye_u + side * 0.012, eye_v - p.brow_gap
            window = self.frame.window(brow_u - 0.14, brow_v - 0.08, brow_u + 0.14, brow_v + 0.08)
            if window is None:
                continue
            u, v = self.frame.coords(window)
            outward = side * (u - brow_u)
            along_v = v - brow_v + p.brow_tilt * outward
            curve = p.brow_arch * 2.5
            taper = thick * (1.0 - 0.4 * np.clip(outward / half_len, -1.0, 1.0))
            sdf = _arc_stroke(
                outward, along_v + curve * half_len * half_len / 2, half_len, curve, taper
            )
            if self.cartoon:
                self.fill(window, sdf, color, self.edge)
                self.outline(window, sdf, 0.6)
            else:
                albedo = color * (1.0 + 0.1 * self.strands[window])
                self.fill(window, sdf, albedo, self.edge * 1.3)

    def eyes(self) -> None:
        p = self.p
        w, h = _eye_size(p, self.cartoon)
        iris = _rgb(p.iris)
        white = WHITE if self.cartoon else _rgb((0.93, 0.91, 0.87))
        radius = h * (0.95 if self.cartoon else 0.9)
        for eye_u, eye_v in _eye_centres(p):
            window = self.frame.window(
                eye_u - 1.7 * w, eye_v - 3.0 * h, eye_u + 1.7 * w, eye_v + 2.5 * h
            )
            if window is None:
                continue
            u, v = self.frame.coords(window)
            x, y = u - eye_u, v - eye_v
            if not self.cartoon:
                socket = np.exp(-((x / (1.5 * w)) ** 2 + ((y + 0.4 * h) / (2.2 * h)) ** 2))
                self.darken(window, 1.0 - 0.22 * socket)
            upper, lower = _almond_arcs(x, y, w, h)
            sclera = np.maximum(upper, lower)
            self.fill(window, sclera, white, self.edge)
            ix = x - p.gaze[0] * 0.3 * w
            iy = y - p.gaze[1] * 0.2 * h
            ring = np.sqrt(ix * ix + iy * iy)
            self.fill(window, np.maximum(ring - radius, sclera), iris, self.edge)
            self.fill(window, np.maximum(ring - radius * 0.45, sclera), PUPIL, self.edge)
            glint = radius * (0.3 if self.cartoon else 0.2)
            spot = _circle(ix + radius * 0.35, iy + radius * 0.35, glint)
            self.fill(window, np.maximum(spot, sclera), WHITE, self.edge)
            if self.cartoon:
                self.fill(
                    window,
                    np.abs(sclera) - self.line * np.where(y < 0, 1.6, 0.9),
                    OUTLINE,
                    self.edge,
                )
            else:
                lid = max(0.2 * h, 0.55 * self.frame.pixel)
                self.fill(window, np.maximum(np.abs(upper) - lid, lower - lid), LASHES, self.edge)
                crease = np.maximum(np.abs(lower) - lid * 0.5, upper - lid * 0.5)
                self.fill(window, crease, self.skin * np.float32(0.55), self.edge)

    def nose(self) -> None:
        p = self.p
        cu, cv = p.head_center
        eye_v = cv + p.eye_level
        tip_v = eye_v + p.nose_length
        nw = p.nose_width
        window = self.frame.window(cu - 3 * nw, eye_v, cu + 3 * nw, tip_v + 0.06)
        if window is None:
            return
        u, v = self.frame.coords(window)
        x, y = u - cu, v - tip_v
        if self.cartoon:
            sdf = _arc_stroke(x, y + 0.01, nw * 0.7, -6.0, self.line * 0.8)
            self.fill(window, sdf, OUTLINE, self.edge)
            return
        away = -1.0 if self.light[0] > 0 else 1.0
        along = np.clip((v - eye_v - 0.03) / (tip_v - eye_v), 0.0, 1.0)
        bridge = np.exp(-(((x - away * nw * 0.9) / (nw * 0.55)) ** 2)) * along
        under = np.exp(-((x / (nw * 1.6)) ** 2 + ((y - 0.025) / 0.018) ** 2))
        shadow = 1.0 - 0.16 * bridge - 0.22 * under
        highlight = 0.08 * np.exp(
            -(((x + away * nw * 0.2) / (nw * 0.6)) ** 2 + ((y + 0.03) / 0.03) ** 2)
        )
        self.darken(window, shadow + highlight)
        for side in (-1.0, 1.0):
            nostril = _ellipse(x - side * nw * 0.55, y - 0.004, nw * 0.35, nw * 0.2)
            self.fill(window, nostril, self.skin * 0.4, self.edge * 1.5)

    def mouth(self) -> None:
        p = self.p
        mu, mv, half, curve = _mouth_geometry(p)
        window = self.frame.window(mu - half - 0.05, mv - 0.09, mu + half + 0.05, mv + 0.09)
        if window is None:
            return
        u, v = self.frame.coords(window)
        x, y = u - mu, v - mv
        mid = curve * x * x
        outer = _mouth_sdf(p, u, v)
        lips = _rgb(p.lip_color)
        if self.cartoon:
            lips = np.clip(lips * np.float32(1.1) - np.float32(0.04), 0.0, 1.0)
            self.fill(window, outer, lips, self.edge)
        else:
            two_tone = np.where(y < mid, lips * np.float32(0.85), lips)
            self.fill(window, outer, two_tone, self.edge)
        opening = p.mouth_open * MOUTH_OPENING
        if opening > 0:
            inner = _lens(x, y, half * 0.92, curve, opening, opening)
            self.fill(window, inner, MOUTH_INSIDE, self.edge)
            teeth = np.maximum(inner, y - mid + opening * 0.25)
            self.fill(window, teeth, TEETH, self.edge)
        else:
            parting = _arc_stroke(x, y, half * 0.97, curve, max(0.004, 0.3 * self.frame.pixel))
            self.fill(
                window, parting, OUTLINE if self.cartoon else lips * np.float32(0.45), self.edge
            )
        self.outline(window, outer, 0.8)

    def finish(self) -> np.ndarray:
        if self.cartoon:
            return self.color
        assert self.shade is not None
        image = self.color * self.shade
        image += 0.015 * self.grain
        return image


def render(params: FaceParams, style: str, size: int, defect: Defect | None = None) -> np.ndarray:
    """The face as a uint8 ``size`` x ``size`` x 3 array in ``style`` ("photo" or "cartoon")."""
    _check_size(size)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    return _Renderer(params, style, int(size), defect).render()


def render_masks(params: FaceParams, size: int, style: str = "photo") -> dict[str, np.ndarray]:
    """Float coverage masks (0..1) of the whole eye shapes and the mouth shape, as rendered.

    Keys "left_eye", "right_eye" and "mouth"; for tests of the landmarks.
    """
    _check_size(size)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    cartoon = style == "cartoon"
    frame = _Frame(params, int(size))
    edge = _feature_edge(frame.pixel, cartoon)
    w, h = _eye_size(params, cartoon)
    masks = {}
    for name, (eye_u, eye_v) in zip(("left_eye", "right_eye"), _eye_centres(params), strict=True):
        masks[name] = _coverage(_almond(frame.u - eye_u, frame.v - eye_v, w, h), edge)
    masks["mouth"] = _coverage(_mouth_sdf(params, frame.u, frame.v), edge)
    return masks
