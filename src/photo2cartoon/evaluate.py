"""Identity preservation of a photo -> cartoon generator, as pix2pix's evaluation reports it.

dlib's identity distance between each test photo and its translation, over the translations in
which dlib still finds a face, and that detection rate (``IdentityScores.summary``): stylised
outputs often stop looking like faces to dlib, so the rate matters as much as the distance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from src.faces.identity_dlib import DlibIdentity
from src.pix2pix.evaluate import to_uint8


@torch.no_grad()
def identity_report(
    generator: nn.Module, photos: torch.Tensor, identity: DlibIdentity, batch_size: int = 8
) -> dict[str, Any]:
    """The identity keys of ``IdentityScores.summary`` for ``photos`` (N x 3 x H x W in
    [-1, 1]) and ``generator``'s translations of them (run in eval mode, its mode restored)."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        translations = [generator(batch.to(device)).cpu() for batch in photos.split(batch_size)]
    finally:
        generator.train(was_training)
    outputs = to_uint8(torch.cat(translations))
    return identity.score_pairs(list(to_uint8(photos)), list(outputs)).summary()
