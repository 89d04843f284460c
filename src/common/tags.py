"""The TensorBoard tag scheme every stage logs under, so runs and stages compare in one view.

==========================  ============================================================
``train/loss_G``             the generator's total loss (every GAN stage)
``train/loss_D``             the discriminator's total loss (every GAN stage)
``train/loss_G_<part>``      a part of it (``train/loss_G_l1``, ``train/loss_G_cycle``, ...)
``train/loss``               the total loss of a stage without a GAN (cleaner, encoder)
``train/loss_<part>``        its parts (``train/loss_lpips``, ...)
``train/lr``                 the learning rate (``train/lr_G`` / ``train/lr_D`` when two)
``train/<name>``             regularisers and training statistics (``train/r1_penalty``)
``val/<name>``               figures on the validation set (``val/l1``, ``val/acc``)
``metrics/<name>``           image-quality metrics (``metrics/fid``, ``metrics/psnr``)
``samples/<name>``           image grids and pictures (``samples/fakes``)
==========================  ============================================================

Progress-bar names may stay short (``g``, ``d``); what reaches a logger follows the scheme.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

LOSS = "train/loss"
LOSS_G = "train/loss_G"
LOSS_D = "train/loss_D"
LR = "train/lr"
LR_G = "train/lr_G"
LR_D = "train/lr_D"

# Figures measuring image quality: they go under metrics/ wherever a stage computes them.
IMAGE_METRICS = frozenset(
    {"fid", "kid", "kid_std", "psnr", "ssim", "lpips", "identity", "id_similarity"}
)

Value = TypeVar("Value")


def _joined(base: str, part: str | None) -> str:
    return base if part is None else f"{base}_{part}"


def loss(part: str | None = None) -> str:
    """``train/loss`` or one of its parts, ``train/loss_<part>`` (stages without a GAN)."""
    return _joined(LOSS, part)


def loss_g(part: str | None = None) -> str:
    """``train/loss_G`` or one of its parts, ``train/loss_G_<part>``."""
    return _joined(LOSS_G, part)


def loss_d(part: str | None = None) -> str:
    """``train/loss_D`` or one of its parts, ``train/loss_D_<part>``."""
    return _joined(LOSS_D, part)


def train(name: str) -> str:
    """``train/<name>``: a regulariser or a training statistic (``r1_penalty``, ``kimg``)."""
    return f"train/{name}"


def val(name: str) -> str:
    """``val/<name>``: a figure on the validation set."""
    return f"val/{name}"


def metric(name: str) -> str:
    """``metrics/<name>``: an image-quality metric."""
    return f"metrics/{name}"


def samples(name: str) -> str:
    """``samples/<name>``: an image grid or picture."""
    return f"samples/{name}"


def evaluation(values: Mapping[str, Value], prefix: str = "") -> dict[str, Value]:
    """Validation figures by name, each under ``metrics/`` when it measures image quality
    (:data:`IMAGE_METRICS`) and under ``val/`` otherwise; ``prefix`` goes before the name
    (``avg_latent_`` -> ``metrics/avg_latent_psnr``)."""
    return {
        (metric if name in IMAGE_METRICS else val)(prefix + name): value
        for name, value in values.items()
    }
