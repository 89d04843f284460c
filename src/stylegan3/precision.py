"""Mixed precision as NVIDIA's StyleGAN networks run it.

Each layer (StyleGAN3 G) or block (StyleGAN2 G, D) at the ``num_fp16_res`` highest resolutions
is built with
``use_fp16``; it then computes in float16 on CUDA unless the caller passes ``force_fp32``. The
weights stay float32 parameters and are cast per forward, ``conv_clamp`` keeps float16
activations in range, and everything runs in float32 on other devices.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

# Device types on which fp16 layers compute in float16 (tests add "cpu" to exercise the path).
FP16_DEVICE_TYPES = {"cuda"}


def layer_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """float16 for an fp16 layer on a float16 device unless ``force_fp32``, else float32."""
    if use_fp16 and not force_fp32 and device.type in FP16_DEVICE_TYPES:
        return torch.float16
    return torch.float32


def weight_memory_format(channels_last: bool) -> torch.memory_format:
    """The layout of a conv weight in a block built channels-last (its input's layout in fp16)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def layer_memory_format(channels_last: bool, dtype: torch.dtype) -> torch.memory_format:
    """Channels-last for a block built with it while it runs in float16 (as the reference)."""
    if channels_last and dtype == torch.float16:
        return torch.channels_last
    return torch.contiguous_format


def fp16_layers(network: nn.Module) -> list[nn.Module]:
    """The layers (StyleGAN3 G) or blocks (StyleGAN2 G, D) of ``network`` built to run in
    float16."""
    return [module for module in network.modules() if getattr(module, "use_fp16", False)]


# The Lightning precision of the StyleGAN stages: their networks pick float16 layers themselves.
STYLEGAN_TRAINER_PRECISION = "32-true"


def stylegan_trainer_precision(cfg: DictConfig, stage: str) -> str:
    """``32-true`` for a stage running StyleGAN networks: autocast on top of their own fp16
    layers would run every layer in reduced precision, unlike the reference. A different
    ``trainer.precision`` (e.g. a chain-wide bf16-mixed meant for pix2pix) is ignored, said once."""
    wanted = OmegaConf.select(cfg, f"{stage}.trainer.precision", default=None)
    wanted = str(wanted or OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    if wanted not in (STYLEGAN_TRAINER_PRECISION, "32"):
        print(
            f"{stage}: trainer.precision={wanted} ignored; the StyleGAN networks run their "
            "num_fp16_res highest resolutions in float16 on CUDA themselves"
        )
    return STYLEGAN_TRAINER_PRECISION
