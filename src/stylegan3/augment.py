"""ADA: the adaptive discriminator augmentation of StyleGAN2-ADA (Karras et al. 2020).

:class:`AugmentPipe` augments every image D sees. Each op runs per image with probability
``p * strength`` (strengths come from a preset, ``bgc`` by default, and keyword overrides).

- Geometric ops ("b" = pixel blitting, "g" = general geometry): xflip, rotate90, integer
  translation, isotropic scale, rotation (applied before and after the anisotropic scale, each
  with probability ``1 - sqrt(1 - p)`` so that some rotation happens with probability ``p``),
  anisotropic scale, fractional translation. They are composed into one inverse 3x3 matrix per
  image and applied once: a bilinear ``grid_sample`` with reflection padding evaluated on a 2x
  supersampled output grid, then a [1, 3, 3, 1] low-pass filter and 2x decimation. This is a
  simpler resampler than the reference's symmetric-wavelet upsample-warp-downsample; it keeps
  aliasing low enough for D while staying differentiable.
- Colour ops ("c"): brightness, contrast, luma flip, hue rotation, saturation, composed into
  one 4x4 matrix on homogeneous RGB and applied once.

Images that draw no geometric (or no colour) op are passed through untouched, so with
``p == 0`` the pipe is exactly the identity. Everything is differentiable w.r.t. the images,
so G receives gradients through D's augmented view. Random numbers come from torch's global
generator, which the trainer saves and restores for exact resume.

:class:`AdaController` adapts ``p`` from the overfitting heuristic ``r_t = E[sign(D(real))]``.
:func:`augment_grid` draws a picture of what the pipe does to a few images;
``python -m src.stylegan3.augment_preview out=augment.png p=0.5`` draws every op on toy faces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from src.common.errors import UserError

GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPS = GEOMETRIC_OPS + COLOR_OPS
BLIT = ("xflip", "rotate90", "xint")
GEOMETRY = ("scale", "rotate", "aniso", "xfrac")
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "b": BLIT,
    "g": GEOMETRY,
    "c": COLOR_OPS,
    "bg": BLIT + GEOMETRY,
    "bgc": BLIT + GEOMETRY + COLOR_OPS,
}
# Magnitudes of the reference "bgc" pipeline.
MAGNITUDES = {
    "xint_max": 0.125,  # integer translation, fraction of the image size
    "scale_std": 0.2,  # log2 standard deviation
    "rotate_max": 1.0,  # fraction of a full half turn either way
    "aniso_std": 0.2,
    "xfrac_std": 0.125,
    "brightness_std": 0.2,
    "contrast_std": 0.5,
    "hue_max": 1.0,
    "saturation_std": 1.0,
}
LOWPASS = (1.0, 3.0, 3.0, 1.0)
SQRT3 = math.sqrt(3.0)


def _eye(n: int, batch: int, device: torch.device) -> Tensor:
    return torch.eye(n, device=device).repeat(batch, 1, 1)


def _matrix(rows: list[list[Any]], batch: int, device: torch.device) -> Tensor:
    """A [batch, n, n] matrix from rows of Python numbers and [batch] tensors (numbers are
    filled in place, so no tiny host-to-device copies happen on a GPU)."""
    out = torch.empty(batch, len(rows), len(rows[0]), device=device)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            out[:, i, j] = value
    return out


def translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    """Batched homogeneous 2-D translation matrices."""
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.shape[0], tx.device)


def scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    """Batched homogeneous 2-D scale matrices."""
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.shape[0], sx.device)


def rotate2d(theta: Tensor) -> Tensor:
    """Batched homogeneous 2-D rotation matrices (counter-clockwise in x-right, y-up terms)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.shape[0], theta.device)


def translate3d(t: Tensor) -> Tensor:
    """Batched homogeneous RGB offsets (the same ``t`` on every channel)."""
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t.shape[0], t.device)


def scale3d(s: Tensor) -> Tensor:
    """Batched homogeneous RGB scales (the same ``s`` on every channel)."""
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s.shape[0], s.device)


def rotate3d(axis: Tensor, theta: Tensor) -> Tensor:
    """Batched homogeneous rotations by ``theta`` about the unit ``axis`` (Rodrigues)."""
    x, y, z = axis.tolist()
    c, s = torch.cos(theta), torch.sin(theta)
    d = 1 - c
    rows = [
        [x * x * d + c, x * y * d - z * s, x * z * d + y * s, 0],
        [y * x * d + z * s, y * y * d + c, y * z * d - x * s, 0],
        [z * x * d - y * s, z * y * d + x * s, z * z * d + c, 0],
        [0, 0, 0, 1],
    ]
    return _matrix(rows, theta.shape[0], theta.device)


class AugmentPipe(nn.Module):
    """Differentiable, per-image random augmentation applied with probability ``p``.

    ``preset`` is one of :data:`PRESETS`; keyword arguments set an op's strength (its
    probability multiplier, e.g. ``hue=0`` turns hue off) or a magnitude from
    :data:`MAGNITUDES`. ``p`` is a scalar float buffer, saved with the module's state.
    """

    def __init__(self, preset: str = "bgc", **strengths: float) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise UserError(f"augpipe: unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        unknown = sorted(set(strengths) - set(OPS) - set(MAGNITUDES))
        if unknown:
            raise UserError(
                f"augpipe: unknown op {', '.join(unknown)}; ops are {', '.join(OPS)}, "
                f"magnitudes {', '.join(MAGNITUDES)}"
            )
        self.preset = preset
        self.strengths = {op: float(op in PRESETS[preset]) for op in OPS}
        self.magnitudes = dict(MAGNITUDES)
        for name, value in strengths.items():
            (self.strengths if name in OPS else self.magnitudes)[name] = float(value)
        self.register_buffer("p", torch.zeros([]))
        self.register_buffer(
            "luma_axis", torch.tensor([1.0, 1.0, 1.0, 0.0]) / SQRT3, persistent=False
        )

    def extra_repr(self) -> str:
        active = ", ".join(f"{k}={v:g}" for k, v in self.strengths.items() if v)
        return f"preset={self.preset!r}, {active}"

    def forward(self, images: Tensor) -> Tensor:
        """Augment a batch of NCHW float images (roughly in [-1, 1])."""
        p = float(self.p)
        if p <= 0:
            return images
        batch, channels = images.shape[:2]
        geometry = self.geometry_matrix(batch, images.shape[2], images.shape[3], p, images.device)
        images = self._apply_where_changed(images, geometry, self.warp)
        if channels in (1, 3) and any(self.strengths[op] for op in COLOR_OPS):
            colour = self.color_matrix(batch, p, images.device)
            images = self._apply_where_changed(images, colour, self.recolor)
        return images

    @staticmethod
    def _apply_where_changed(
        images: Tensor, matrices: Tensor, apply: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """``apply`` to the images whose matrix is not the identity; the rest stay as they are."""
        eye = torch.eye(matrices.shape[-1], device=matrices.device)
        changed = (matrices != eye).flatten(1).any(dim=1)
        if not bool(changed.any()):
            return images
        if bool(changed.all()):
            return apply(images, matrices)
        out = images.clone()
        out[changed] = apply(images[changed], matrices[changed]).to(images.dtype)
        return out

    def _chosen(self, op: str, p: float, batch: int, device: torch.device) -> Tensor:
        """[batch] booleans: which images this op applies to."""
        return torch.rand(batch, device=device) < min(p * self.strengths[op], 1.0)

    def geometry_matrix(
        self, batch: int, height: int, width: int, p: float, device: torch.device
    ) -> Tensor:
        """[batch, 3, 3] inverse transforms (output pixel -> input pixel, centred pixel units)."""
        m, s = self.magnitudes, self.strengths
        g_inv = _eye(3, batch, device)
        one, zero = torch.ones(batch, device=device), torch.zeros(batch, device=device)

        def keep(op: str, value: Tensor, neutral: Tensor, chance: float | None = None) -> Tensor:
            if chance is None:
                return torch.where(self._chosen(op, p, batch, device), value, neutral)
            return torch.where(torch.rand(batch, device=device) < chance, value, neutral)

        if s["xflip"]:
            flip = keep("xflip", torch.randint(0, 2, (batch,), device=device).float(), zero)
            g_inv = g_inv @ scale2d(1 - 2 * flip, one)
        if s["rotate90"]:
            quarter = keep("rotate90", torch.randint(0, 4, (batch,), device=device).float(), zero)
            g_inv = g_inv @ rotate2d(-math.pi / 2 * quarter)
        if s["xint"]:
            shift = (torch.rand(2, batch, device=device) * 2 - 1) * m["xint_max"]
            chosen = self._chosen("xint", p, batch, device)
            tx, ty = torch.round(shift[0] * width) * chosen, torch.round(shift[1] * height) * chosen
            g_inv = g_inv @ translate2d(-tx, -ty)
        if s["scale"]:
            factor = keep(
                "scale", torch.exp2(torch.randn(batch, device=device) * m["scale_std"]), one
            )
            g_inv = g_inv @ scale2d(1 / factor, 1 / factor)
        rotation_chance = 1 - math.sqrt(1 - min(p * s["rotate"], 1.0))
        if s["rotate"]:
            theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * m["rotate_max"]
            g_inv = g_inv @ rotate2d(-keep("rotate", theta, zero, rotation_chance))
        if s["aniso"]:
            factor = keep(
                "aniso", torch.exp2(torch.randn(batch, device=device) * m["aniso_std"]), one
            )
            g_inv = g_inv @ scale2d(1 / factor, factor)
        if s["rotate"]:
            theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * m["rotate_max"]
            g_inv = g_inv @ rotate2d(-keep("rotate", theta, zero, rotation_chance))
        if s["xfrac"]:
            shift = torch.randn(2, batch, device=device) * m["xfrac_std"]
            chosen = self._chosen("xfrac", p, batch, device)
            g_inv = g_inv @ translate2d(-shift[0] * width * chosen, -shift[1] * height * chosen)
        return g_inv

    def warp(self, images: Tensor, g_inv: Tensor) -> Tensor:
        """Resample ``images`` through the inverse transforms ``g_inv`` (see the module doc)."""
        batch, channels, height, width = images.shape
        # Centred pixel units -> grid_sample's normalised [-1, 1] units (align_corners=False).
        to_pixels = torch.diag(torch.tensor([width / 2, height / 2, 1.0], device=images.device))
        to_unit = torch.linalg.inv(to_pixels)
        theta = (to_unit @ g_inv.float() @ to_pixels)[:, :2, :]
        grid = F.affine_grid(theta, [batch, channels, height * 2, width * 2], align_corners=False)
        warped = F.grid_sample(
            images,
            grid.to(images.dtype),
            mode="bilinear",
            padding_mode="reflection",
            align_corners=False,
        )
        return self.downsample(warped)

    @staticmethod
    def downsample(images: Tensor) -> Tensor:
        """2x decimation after the separable [1, 3, 3, 1] / 8 low-pass filter (reflect padded),
        written as strided sums (much cheaper than a depthwise convolution on CPU)."""
        x = F.pad(images, [1, 1, 1, 1], mode="reflect")
        height, width = images.shape[2] // 2, images.shape[3] // 2
        taps = [w / sum(LOWPASS) for w in LOWPASS]
        x = sum(w * x[:, :, :, k : k + 2 * width : 2] for k, w in enumerate(taps))
        return sum(w * x[:, :, k : k + 2 * height : 2, :] for k, w in enumerate(taps))

    def color_matrix(self, batch: int, p: float, device: torch.device) -> Tensor:
        """[batch, 4, 4] colour transforms on homogeneous RGB."""
        m, s = self.magnitudes, self.strengths
        c = _eye(4, batch, device)
        one, zero = torch.ones(batch, device=device), torch.zeros(batch, device=device)
        axis = self.luma_axis.to(device)
        outer = torch.outer(axis, axis)
        if s["brightness"]:
            offset = torch.randn(batch, device=device) * m["brightness_std"]
            c = (
                translate3d(torch.where(self._chosen("brightness", p, batch, device), offset, zero))
                @ c
            )
        if s["contrast"]:
            factor = torch.exp2(torch.randn(batch, device=device) * m["contrast_std"])
            c = scale3d(torch.where(self._chosen("contrast", p, batch, device), factor, one)) @ c
        if s["lumaflip"]:
            flip = torch.randint(0, 2, (batch,), device=device).float()
            flip = torch.where(self._chosen("lumaflip", p, batch, device), flip, zero)
            c = (torch.eye(4, device=device) - 2 * outer * flip.view(-1, 1, 1)) @ c
        if s["hue"]:
            theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * m["hue_max"]
            theta = torch.where(self._chosen("hue", p, batch, device), theta, zero)
            c = rotate3d(axis[:3], theta) @ c
        if s["saturation"]:
            factor = torch.exp2(torch.randn(batch, device=device) * m["saturation_std"])
            factor = torch.where(self._chosen("saturation", p, batch, device), factor, one)
            c = (outer + (torch.eye(4, device=device) - outer) * factor.view(-1, 1, 1)) @ c
        return c

    @staticmethod
    def recolor(images: Tensor, matrices: Tensor) -> Tensor:
        """Apply [N, 4, 4] colour matrices to N RGB (or grey, through the mean) images."""
        batch, channels, height, width = images.shape
        matrices = matrices.to(images.dtype)
        flat = images.reshape(batch, channels, height * width)
        if channels == 3:
            out = matrices[:, :3, :3] @ flat + matrices[:, :3, 3:]
        else:
            out = flat * matrices[:, :3, :3].mean(dim=(1, 2), keepdim=True)
            out = out + matrices[:, :3, 3:].mean(dim=(1, 2), keepdim=True)
        return out.reshape(batch, channels, height, width)


class AdaController:
    """Adjusts ``pipe.p`` toward the overfitting target ``E[sign(D(real))] = target``.

    Call :meth:`accumulate` with D's logits on the (augmented) reals of every D step and
    :meth:`step` once per D step. Every ``interval`` steps ``p`` moves by
    ``sign(r_t - target) * batch * interval / (speed_kimg * 1000)``, so it can cross [0, 1] in
    ``speed_kimg`` thousand images. ``reduce`` all-reduces (sums) the [sum, count] tensor across
    DDP ranks, so every rank takes the same step.
    """

    def __init__(
        self,
        pipe: AugmentPipe,
        target: float = 0.6,
        interval: int = 4,
        speed_kimg: float = 500,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if interval < 1 or speed_kimg <= 0:
            raise UserError("ada_interval must be >= 1 and ada_kimg positive")
        self.pipe = pipe
        self.target = float(target)
        self.interval = int(interval)
        self.speed_kimg = float(speed_kimg)
        self.reduce = reduce
        self.steps = 0
        self._stats: Tensor | None = None
        self._rt = math.nan
        self._device = torch.device("cpu")

    @property
    def rt(self) -> float:
        """``E[sign(D(real))]`` over the last completed interval (NaN before the first)."""
        return self._rt

    def accumulate(self, real_logits: Tensor) -> None:
        """Add the signs of D's logits on real images to the current interval's statistics."""
        logits = real_logits.detach()
        count = torch.full((), logits.numel(), dtype=torch.float64, device=logits.device)
        stats = torch.stack([torch.sign(logits).sum().double(), count])
        self._stats = stats if self._stats is None else self._stats.to(stats.device) + stats
        self._device = stats.device

    def step(self, batch_size: int) -> bool:
        """Count one D step of ``batch_size`` images (all ranks); adjust p every ``interval``.

        Returns True when p was adjusted (the statistics are then reset)."""
        self.steps += 1
        if self.steps % self.interval:
            return False
        stats = self._stats
        if stats is None:
            stats = torch.zeros(2, dtype=torch.float64, device=self._device)
        if self.reduce is not None:
            stats = self.reduce(stats.clone())
        total, count = (float(v) for v in stats.cpu())
        self._stats = None
        if count <= 0:
            return True
        self._rt = total / count
        change = math.copysign(1.0, self._rt - self.target) if self._rt != self.target else 0.0
        change *= batch_size * self.interval / (self.speed_kimg * 1000)
        p = min(max(float(self.pipe.p) + change, 0.0), 1.0)
        self.pipe.p.fill_(p)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The controller's progress (p itself is in the pipe's state)."""
        stats = [0.0, 0.0] if self._stats is None else [float(v) for v in self._stats.cpu()]
        return {"steps": self.steps, "stats": stats, "rt": self._rt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.steps = int(state["steps"])
        total, count = state["stats"]
        self._stats = torch.tensor([total, count], dtype=torch.float64) if count else None
        self._rt = float(state["rt"])


def augment_grid(images: Tensor, pipe: AugmentPipe, repeats: int = 4) -> Image.Image:
    """A picture: each row one input image followed by ``repeats`` augmentations of it."""
    from src.common.visual import tensor_grid

    rows = []
    with torch.no_grad():
        for image in images:
            copies = image.unsqueeze(0).repeat(repeats, 1, 1, 1)
            rows.append(torch.cat([image.unsqueeze(0), pipe(copies)]))
    grid = tensor_grid(torch.cat(rows).clamp(-1, 1), nrow=repeats + 1)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())
