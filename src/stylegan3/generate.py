"""``python -m src.stylegan3.generate ckpt=... seeds=0-63 psi=0.7 outdir=...``: images from a
StyleGAN3 or StyleGAN2 generator, one PNG per seed plus a grid. See
``configs/stylegan3/generate.yaml``.

Latents come from ``numpy.random.RandomState(seed)`` exactly as in NVIDIA's ``gen_images.py`` /
``generate.py``, so a seed names the same face here and there. The batch never changes a latent;
an image may differ by one 8-bit level between batch sizes (batched convolutions sum in another
order). StyleGAN2's noise inputs default to ``const``, as in those tools.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from rich.progress import track

from src.common.errors import UserError
from src.common.images import save_image
from src.common.stage import CONFIG_DIR, fail
from src.common.visual import contact_sheet


def parse_seeds(spec: int | str | Sequence[int]) -> list[int]:
    """Seeds from ``5``, ``"0-63"``, ``"1,5,9"``, ``"0-3,10"`` or a list."""
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, Sequence | ListConfig) and not isinstance(spec, str):
        return [int(s) for s in spec]
    seeds = []
    for part in str(spec).split(","):
        first, dash, last = part.strip().partition("-")
        try:
            seeds += list(range(int(first), int(last) + 1)) if dash else [int(first)]
        except ValueError:
            raise UserError(f"seeds: cannot read {spec!r}; write e.g. 0-63 or 1,5,9") from None
    return seeds


def latents_for(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim] latents, each drawn from its own ``RandomState(seed)``."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]))


def input_transform(
    translate: Sequence[float], rotate_degrees: float, resolution: int
) -> torch.Tensor:
    """The inverse 3x3 transform for ``synthesis.input.transform``, as NVIDIA's ``gen_images.py``
    builds it: ``inv([[c, s, tx], [-s, c, ty], [0, 0, 1]])`` with ``c, s`` the cosine and sine of
    ``rotate_degrees``. ``translate`` is in output pixels (x right, y down), so ``tx`` is
    ``translate[0] / resolution``: their ``--translate=0.25,0`` is ours ``translate=[64,0]`` at
    256 px, and the same ``rotate`` names the same image in both."""
    angle = math.radians(rotate_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = torch.tensor(
        [
            [cos, sin, translate[0] / resolution],
            [-sin, cos, translate[1] / resolution],
            [0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )
    return torch.linalg.inv(forward).float()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """NCHW images in [-1, 1] to 8-bit RGB pictures."""
    pixels = (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(p.cpu().numpy()) for p in pixels]


def generate(cfg: DictConfig) -> Path:
    """Write ``seed%04d.png`` for every seed and ``grid.png`` into ``cfg.outdir``."""
    from src.stylegan3.legacy import load_networks
    from src.stylegan3.networks import noise_kwargs

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    networks = load_networks(cfg.ckpt)
    if cfg.network not in networks:
        raise UserError(f"network: {cfg.ckpt} has no {cfg.network!r}; it has {sorted(networks)}")
    generator = networks[cfg.network].to(device).eval()
    transform = getattr(getattr(generator.synthesis, "input", None), "transform", None)
    if transform is not None:
        transform.copy_(input_transform(cfg.translate, cfg.rotate, generator.img_resolution))
    elif any(cfg.translate) or cfg.rotate:
        raise UserError("translate/rotate need a StyleGAN3 generator; set them to 0")
    label = None
    if generator.c_dim:
        if cfg.class_idx is None:
            raise UserError(f"class_idx: {cfg.ckpt} is conditional; choose a class 0..")
        label = torch.zeros(1, generator.c_dim, device=device)
        label[0, int(cfg.class_idx)] = 1

    seeds = parse_seeds(cfg.seeds)
    outdir = Path(cfg.outdir)
    pictures = []
    batches = [seeds[i : i + cfg.batch_size] for i in range(0, len(seeds), cfg.batch_size)]
    for batch in track(batches, description="generating"):
        z = latents_for(batch, generator.z_dim).to(device=device, dtype=torch.float32)
        c = None if label is None else label.expand(len(batch), -1)
        with torch.no_grad():
            images = generator(
                z,
                c,
                truncation_psi=cfg.psi,
                truncation_cutoff=cfg.truncation_cutoff,
                **noise_kwargs(generator, cfg.noise_mode),
            )
        for seed, picture in zip(batch, to_pil(images), strict=True):
            save_image(picture, outdir / f"seed{seed:04d}.png")
            pictures.append(picture)
    save_image(contact_sheet(pictures, columns=cfg.grid_columns), outdir / "grid.png")
    return outdir


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "stylegan3"), config_name="generate")
def main(cfg: DictConfig) -> None:
    """Generate the configured seeds and say where the pictures went."""
    try:
        outdir = generate(cfg)
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    print(f"wrote {len(parse_seeds(cfg.seeds))} images and grid.png to {outdir}")


if __name__ == "__main__":
    main()
