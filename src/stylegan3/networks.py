"""StyleGAN3 networks: the alias-free generator (configs T and R) and the StyleGAN2 residual
discriminator, with parameter names that match the official release's pickles."""

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

__all__ = [
    "Discriminator",
    "FullyConnectedLayer",
    "Generator",
    "LayerSpec",
    "MappingNetwork",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "layer_specs",
]
