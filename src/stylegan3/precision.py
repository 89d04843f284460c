"""Mixed precision as NVIDIA's StyleGAN networks run it.

Each layer (G) or block (D) at the ``num_fp16_res`` highest resolutions is built with
``use_fp16``; it then computes in float16 on CUDA unless the caller passes ``force_fp32``. The
weights stay float32 parameters and are cast per forward, ``conv_clamp`` keeps float16
activations in range, and everything runs in float32 on other devices.
"""

from __future__ import annotations

import torch
from torch import nn

# Device types on which fp16 layers compute in float16 (tests add "cpu" to exercise the path).
FP16_DEVICE_TYPES = {"cuda"}


def layer_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """float16 for an fp16 layer on a float16 device unless ``force_fp32``, else float32."""
    if use_fp16 and not force_fp32 and device.type in FP16_DEVICE_TYPES:
        return torch.float16
    return torch.float32


def layer_memory_format(channels_last: bool, dtype: torch.dtype) -> torch.memory_format:
    """Channels-last for a block built with it while it runs in float16 (as the reference)."""
    if channels_last and dtype == torch.float16:
        return torch.channels_last
    return torch.contiguous_format


def fp16_layers(network: nn.Module) -> list[nn.Module]:
    """The layers (G) or blocks (D) of ``network`` built to run in float16."""
    return [module for module in network.modules() if getattr(module, "use_fp16", False)]
