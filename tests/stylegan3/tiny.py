"""Constructor arguments of a tiny StyleGAN3 generator and discriminator, shared by tests that
need real networks but not their size (every official kwarg spelled out, as in a pickle)."""

from pathlib import Path

import torch
from torch import nn

G_KWARGS = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 512,
    "channel_max": 32,
    "num_layers": 3,
    "num_critical": 1,
    "margin_size": 2,
    "magnitude_ema_beta": 0.99,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}
# The StyleGAN2 generator as the StyleGAN3 repository's pickles record it (flat synthesis kwargs).
SG2_G_KWARGS = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 128,
    "channel_max": 32,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}
D_KWARGS = {
    "c_dim": 0,
    "img_resolution": 8,
    "img_channels": 3,
    "channel_base": 256,
    "channel_max": 32,
    "num_fp16_res": 4,
    "conv_clamp": 256,
    "block_kwargs": {"freeze_layers": 0},
    "mapping_kwargs": {},
    "epilogue_kwargs": {"mbstd_group_size": 2},
}


def write_tiny_checkpoint(
    path: str | Path,
    seed: int = 0,
    tune_seed: int | None = None,
    family: str = "stylegan3",
    **g_changes: object,
) -> Path:
    """Save a tiny generator (as G and G_ema; of ``family``, with ``G_KWARGS`` or
    ``SG2_G_KWARGS``) and discriminator in our checkpoint format.

    The architecture and fixed buffers come from ``seed``; with ``tune_seed`` every parameter,
    ``magnitude_ema`` and ``w_avg`` are then moved by noise from that seed, as a fine-tune of
    the ``seed`` network would move them. ``g_changes`` override ``G_KWARGS``. Returns the path.
    """
    import torch

    from src.common.checkpoint import save_checkpoint
    from src.stylegan3.legacy import GENERATORS, to_checkpoint
    from src.stylegan3.networks import Discriminator

    g_kwargs = {**(SG2_G_KWARGS if family == "stylegan2" else G_KWARGS), **g_changes}
    torch.manual_seed(seed)
    generator = GENERATORS[family](**g_kwargs)
    discriminator = Discriminator(**D_KWARGS)
    if tune_seed is not None:
        noise = torch.Generator().manual_seed(tune_seed)
        with torch.no_grad():
            for param in generator.parameters():
                param.add_(0.1 * torch.randn(param.shape, generator=noise))
            for name, buffer in generator.named_buffers():
                if name.endswith(("magnitude_ema", "w_avg")):
                    buffer.copy_(torch.rand(buffer.shape, generator=noise) + 0.5)
    networks = {
        "G": generator,
        "G_ema": generator,
        "D": discriminator,
        "configs": {"G": g_kwargs, "G_ema": g_kwargs, "D": D_KWARGS},
    }
    return save_checkpoint(to_checkpoint(networks, "tiny test network"), path)


class AugmentPipe(nn.Module):
    """Stand-in for ``training.augment.AugmentPipe``: its probability and filter-bank buffers."""

    def __init__(self, **strengths: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(0.125))
        self.register_buffer("Hz_geom", torch.linspace(-0.1, 0.1, 12))
        self.register_buffer("Hz_fbank", torch.ones(4, 12) / 12)
        for name, value in strengths.items():
            setattr(self, name, float(value))
