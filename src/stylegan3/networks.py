"""StyleGAN networks of both families, with parameter names that match the official pickles:
the StyleGAN3 alias-free generator (configs T and R), the StyleGAN2 generator
(``src.stylegan3.stylegan2``) and the StyleGAN2 residual discriminator that both train against.
"""

from torch import nn

from src.common.errors import UserError
from src.stylegan3 import stylegan2
from src.stylegan3.discriminator import Discriminator
from src.stylegan3.generator import (
    Generator,
    LayerSpec,
    SynthesisInput,
    SynthesisLayer,
    SynthesisNetwork,
    layer_specs,
)
from src.stylegan3.layers import FullyConnectedLayer, MappingNetwork


def family_of(generator: nn.Module) -> str:
    """The family of a generator module (``stylegan2`` or ``stylegan3``)."""
    return "stylegan2" if isinstance(generator, stylegan2.Generator) else "stylegan3"


def noise_kwargs(generator: nn.Module, noise_mode: str) -> dict[str, str]:
    """Call kwargs that pick ``noise_mode`` for a StyleGAN2 generator (or its synthesis);
    StyleGAN3 has no noise inputs, so nothing for it."""
    if noise_mode not in stylegan2.NOISE_MODES:
        raise UserError(
            f"noise_mode: {noise_mode!r}; use one of {', '.join(stylegan2.NOISE_MODES)}"
        )
    return {"noise_mode": noise_mode} if family_of(generator) == "stylegan2" else {}


__all__ = [
    "Discriminator",
    "FullyConnectedLayer",
    "Generator",
    "LayerSpec",
    "MappingNetwork",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "family_of",
    "layer_specs",
    "noise_kwargs",
    "stylegan2",
]
