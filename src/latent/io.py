"""What the latent stages share: the generator, targets, latents files, pictures and the
projector's loss networks, each from the stage's config.

A projected target ``<stem>`` lives in its set's folder as ``<stem>.npz`` (``ws`` [num_ws,
w_dim], plus ``noise.<buffer>`` for StyleGAN2's optimised noise inputs), ``<stem>_target.png``
(the aligned crop it was fitted to), ``<stem>.png`` (the render), ``<stem>_progress.gif`` and
``<stem>.json`` (metrics).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from src.common.errors import UserError
from src.common.fileio import atomic_path
from src.common.images import list_images, load_image, save_image
from src.latent.projection import ProjectionSettings, check_ws
from src.stylegan3.generate import to_pil

LATENTS_SUFFIX = ".npz"
TARGET_SUFFIX = "_target.png"
NOISE_PREFIX = "noise."


@dataclass
class Latents:
    """Projected latents of one target: ``ws`` [num_ws, w_dim] and StyleGAN2 noise buffers."""

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; or the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_generator_network(path: str, key: str, device: torch.device) -> nn.Module:
    """The generator ``key`` (G_ema by default) of our checkpoint or an official pickle."""
    from src.stylegan3.legacy import load_networks

    networks = load_networks(path)
    if key not in networks:
        raise UserError(f"network_key: {path} has no {key!r}; it has {sorted(networks)}")
    generator = networks[key]
    if generator.c_dim:
        raise UserError(f"{path} is a conditional generator; the latent tools need one without c")
    return generator.to(device).eval().requires_grad_(False)


def image_tensor(picture: Image.Image, size: int) -> torch.Tensor:
    """An RGB picture as [3, size, size] in [-1, 1] (resized with Lanczos when needed)."""
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32))
    return pixels.permute(2, 0, 1) / 127.5 - 1


def to_picture(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> an 8-bit RGB picture."""
    return to_pil(image[None].detach().cpu())[0]


def save_latents(path: Path, latents: Latents) -> Path:
    """Write ``ws`` and the noise buffers as one ``.npz``, atomically."""
    arrays = {"ws": latents.ws.detach().cpu().numpy()}
    arrays.update(
        {NOISE_PREFIX + name: v.detach().cpu().numpy() for name, v in latents.noise.items()}
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_latents(path: Path, generator: nn.Module | None = None) -> Latents:
    """A latents file (``ws`` [num_ws, w_dim] or [w_dim], as an encoder would write it), checked
    against ``generator`` when given."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: torch.from_numpy(data[name]).float() for name in data.files}
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a latents .npz file ({err})") from None
    if "ws" not in arrays:
        raise UserError(f"{path} has no 'ws' array; it holds {sorted(arrays)}")
    ws = arrays.pop("ws")
    if generator is not None:
        ws = check_ws(ws, generator, str(path))
    noise = {k[len(NOISE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(NOISE_PREFIX)}
    return Latents(ws, noise)


def latents_in(folder: str | os.PathLike[str], key: str) -> dict[str, Path]:
    """The ``.npz`` latents files of ``folder`` by stem, or one line saying what is missing."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{key}: {root} is not a folder of projected latents (.npz)")
    files = {p.stem: p for p in sorted(root.glob(f"*{LATENTS_SUFFIX}"))}
    if not files:
        raise UserError(f"{key}: {root} holds no .npz latents; run python -m src.latent.project")
    return files


def original_picture(latents_path: Path) -> Image.Image | None:
    """The aligned crop a latents file was projected from, when it lies beside it."""
    target = latents_path.with_name(latents_path.stem + TARGET_SUFFIX)
    return load_image(target) if target.is_file() else None


def settings_from(params: Mapping[str, Any], **changes: Any) -> ProjectionSettings:
    """ProjectionSettings from a stage's config keys of the same names."""
    names = ProjectionSettings.__dataclass_fields__
    values = {name: params[name] for name in names if name in params and params[name] is not None}
    values.update(changes)
    return ProjectionSettings(**values)


def save_gif(frames: list[Image.Image], path: Path, duration_ms: int) -> Path:
    """An endlessly looping GIF of ``frames``, written atomically."""
    return save_image(
        frames[0], path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
    )


@dataclass
class Targets:
    """Aligned crops to project, by name, and the photos they could not come from (why)."""

    images: dict[str, Image.Image]
    skipped: dict[str, str]


def load_targets(folder: str | os.PathLike[str], size: int, params: DictConfig) -> Targets:
    """Every image of ``folder``: with ``params.align`` its largest face aligned to the FFHQ
    template by ``src.faces``, else the picture itself (an aligned crop), at ``size`` px."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"targets: {root} is not a folder of photos")
    images, skipped = {}, {}
    detector = None
    if params.align:
        from omegaconf import OmegaConf

        from src.faces import crop_faces, make_detector

        options = OmegaConf.to_container(params.detector.options) or {}
        detector = make_detector(str(params.detector.name), **options)  # type: ignore[arg-type]
    for path in list_images(root):
        try:
            picture = load_image(path)
        except UserError as err:
            skipped[path.name] = str(err)
            continue
        if detector is None:
            images[path.stem] = picture.resize((size, size), Image.Resampling.LANCZOS)
            continue
        faces, _ = crop_faces(
            picture, detector, size, template="ffhq", min_face=int(params.min_face), max_faces=1
        )
        if not faces:
            skipped[path.name] = f"no face of at least {params.min_face} px found"
            continue
        images[path.stem] = Image.fromarray(faces[0].image)
    if not images:
        raise UserError(f"targets: no usable image in {root} ({len(skipped)} skipped)")
    return Targets(images, skipped)


def load_losses(
    params: DictConfig, settings: ProjectionSettings, *, identity_needed: bool = False
) -> tuple[nn.Module | None, nn.Module | None]:
    """The LPIPS network (when its weight is set, or for metrics when its weights are) and the
    identity encoder (when its weight is set, ``identity_needed``, or its weights are)."""
    from src.common.faceid import load_identity_encoder
    from src.latent.perceptual import load_perceptual

    perceptual = None
    if settings.lpips_weight > 0 or params.lpips.vgg16:
        perceptual = load_perceptual(str(params.lpips.backbone), params.lpips.vgg16)
    identity = None
    if settings.identity_weight > 0 or identity_needed or params.identity.weights:
        identity = load_identity_encoder(
            str(params.identity.kind), params.identity.weights, "identity.weights"
        )
    return perceptual, identity
