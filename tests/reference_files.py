"""Foreign state-dict files written the way the reference trainers write them, for loader tests.

What the reference code does, from its public source:

* pytorch-CycleGAN-and-pix2pix ``BaseModel.save_networks``: ``torch.save(net.cpu().state_dict(),
  '<epoch>_net_<name>.pth')``, or ``net.module.cpu().state_dict()`` when the net runs in
  ``DataParallel`` on GPUs, so its files never carry ``module.``; ``load_networks`` deletes the
  ``_metadata`` attribute, drops InstanceNorm running stats of pre-0.4 files and loads strictly.
* U-GAT-IT (``UGATIT.save``) and photo2cartoon (``UgatitSadalinHourglass.save``): one
  ``torch.save`` of ``{'genA2B': genA2B.state_dict(), 'genB2A': ..., 'disGA': ..., 'disGB': ...,
  'disLA': ..., 'disLB': ...}`` as ``<dataset>_params_<step:07d>.pt``. photo2cartoon's ``save``
  unwraps ``DataParallel`` (multi-GPU runs), but its ``<dataset>_params_latest.pt`` (every 1000
  steps) saves the wrapped ``state_dict()``, whose keys all start with ``module.``.
* photo2cartoon's ``FaceFeatures`` loads ``model_mobilefacenet.pth`` strictly into its
  InsightFace ``MobileFaceNet(512)``: a bare ``state_dict()``.

A ``state_dict()`` is an ``OrderedDict`` with a ``_metadata`` attribute (per-module versions,
spectral norm's version) that ``torch.save`` pickles with it. The released weights were written
by PyTorch before 1.6, in the legacy (non-zip) serialization; newer runs write zip files.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

SERIALIZATIONS = ("legacy", "zip")


def reference_state_dict(module: nn.Module, *, data_parallel: bool = False) -> OrderedDict:
    """``module.state_dict()`` as the reference calls it, optionally through ``DataParallel``
    (``module.``-prefixed keys); ``module`` stays on the CPU."""
    if not data_parallel:
        return module.state_dict()
    state = nn.DataParallel(module).state_dict()
    module.cpu()
    return state


def save_like_reference(payload: Any, path: Path, serialization: str) -> Path:
    """``torch.save(payload, path)`` in the ``legacy`` (PyTorch < 1.6) or ``zip`` format."""
    if serialization not in SERIALIZATIONS:
        raise ValueError(f"serialization must be one of {SERIALIZATIONS}, got {serialization!r}")
    torch.save(payload, path, _use_new_zipfile_serialization=serialization == "zip")
    return path


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Distinct random values in every parameter and buffer, so no mapping error hides behind
    equal initial values (blend weights ``rho`` / ``w_*`` kept in [0, 1], variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                tensor.copy_(torch.randint(1, 100, tensor.shape, generator=generator))
                continue
            values = torch.rand(tensor.shape, generator=generator)
            if not name.endswith(("rho", "w_gamma", "w_beta", "running_var")):
                values = (values - 0.5) * 0.4
            tensor.copy_(values)
    return module
