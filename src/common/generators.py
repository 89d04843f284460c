"""Exported image-to-image generators: one file format every serving path loads.

A stage that trains a face -> cartoon generator (pix2pix, photo2cartoon, ...) exports it with
:func:`save_generator` as ``generator.pt``: the weights, the constructor arguments, the family
that knows how to build it, and the image size and value range it expects. ``cartoonize``, the
bot and ONNX export then load any of them with :func:`load_generator`, without knowing which
stage made it. The file is a plain dict loaded with ``weights_only=True``: no code runs on load.

Families map a name to a builder ``config -> nn.Module`` given as ``"module:function"`` and
imported on first use, so loading a pix2pix generator never imports photo2cartoon.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from src.common.errors import UserError

FORMAT = "toonforge.generator/1"

Builder = Callable[[dict[str, Any]], nn.Module]

# family -> "module:function" building the network from its saved config.
FAMILIES: dict[str, str] = {
    "identity": "src.common.generators:build_identity",
    "pix2pix": "src.pix2pix.networks:build_generator",
    "photo2cartoon": "src.photo2cartoon.networks:build_generator",
    "cyclegan": "src.cyclegan.networks:build_generator",
}


@dataclass
class GeneratorBundle:
    """A loaded generator and what a caller needs to feed it.

    ``module`` maps RGB images ``N x 3 x image_size x image_size`` in ``value_range`` to images
    of the same shape and range (a single tensor, ready for ONNX export).
    """

    module: nn.Module
    family: str
    config: dict[str, Any]
    image_size: int
    value_range: tuple[float, float] = (-1.0, 1.0)
    meta: dict[str, Any] = field(default_factory=dict)


class IdentityGenerator(nn.Module):
    """Returns its input: a stand-in generator for tests of the serving code (paste-back, ONNX)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """A copy of ``images``."""
        return images.clone()


def build_identity(config: dict[str, Any]) -> nn.Module:
    """The ``identity`` family's builder (takes no configuration)."""
    return IdentityGenerator()


def resolve_builder(family: str) -> Builder:
    """The builder function registered for ``family``."""
    if family not in FAMILIES:
        raise UserError(
            f"unknown generator family '{family}'; known: {', '.join(sorted(FAMILIES))}"
        )
    module_name, _, function = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module_name), function)


def save_generator(
    path: str | os.PathLike[str],
    module: nn.Module,
    *,
    family: str,
    config: dict[str, Any],
    image_size: int,
    value_range: tuple[float, float] = (-1.0, 1.0),
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``module`` as an exported generator file, atomically."""
    resolve_builder(family)
    payload = {
        "format": FORMAT,
        "family": family,
        "config": dict(config),
        "image_size": int(image_size),
        "value_range": [float(value_range[0]), float(value_range[1])],
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    return save_checkpoint(payload, path)


def load_generator(path: str | os.PathLike[str], map_location: str = "cpu") -> GeneratorBundle:
    """Load an exported generator file, built by its family and checked key by key, in eval mode."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"generator file {source} does not exist; check the path")
    payload = load_checkpoint(source, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{source} is not an exported generator ({FORMAT}); export one with the training "
            "stage (it writes generator.pt) or the stage's export command"
        )
    try:
        family = str(payload["family"])
        config = dict(payload["config"])
        image_size = int(payload["image_size"])
        low, high = (float(v) for v in payload.get("value_range", (-1.0, 1.0)))
        meta = dict(payload.get("meta", {}))
        state_dict = dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{source} is a damaged {FORMAT} file ({type(err).__name__}: {err}); export it again"
        ) from None
    build = resolve_builder(family)
    try:
        module = build(config)
    except UserError:
        raise
    except Exception as err:  # a saved config is data: any failure to build is the file's
        raise UserError(
            f"{source}: its {family} config does not build a network ({type(err).__name__}: "
            f"{err}); export it again"
        ) from None
    load_state_dict_checked(module, state_dict, str(source))
    module.eval()
    return GeneratorBundle(
        module=module,
        family=family,
        config=config,
        image_size=image_size,
        value_range=(low, high),
        meta=meta,
    )
