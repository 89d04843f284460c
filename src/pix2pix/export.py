"""``python -m src.pix2pix.export ckpt=... format=onnx|torchscript out=...``: a pix2pix
generator as an ONNX graph or a TorchScript module, for serving without our code.

``ckpt`` may be the stage's ``generator.pt``, one of its Lightning checkpoints, or the pix2pix
release's ``latest_net_G.pth`` (described by the ``generator`` options). ONNX graphs have a
dynamic batch axis, input ``input`` and output ``output``, and are checked against PyTorch
with ONNX Runtime. See ``configs/pix2pix/export.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.export import export_onnx, export_torchscript, onnx_max_abs_diff
from src.common.generators import FORMAT as GENERATOR_FORMAT
from src.common.generators import load_generator
from src.common.stage import CONFIG_DIR, fail
from src.pix2pix.interop import from_reference
from src.pix2pix.networks import build_generator, generator_config

FORMATS = ("onnx", "torchscript")
RELEASE_SIZE = 256
LIGHTNING_PREFIX = "generator."


@dataclass
class LoadedGenerator:
    """A generator in eval mode and the image side it was trained at."""

    module: nn.Module
    image_size: int


def load_any_generator(
    path: str | os.PathLike[str], release_options: dict[str, Any] | None = None
) -> LoadedGenerator:
    """A pix2pix generator from ``generator.pt``, a Lightning checkpoint of the stage, or a
    release ``latest_net_G.pth`` (built from ``release_options``)."""
    source = Path(path)
    payload = load_checkpoint(source)
    if isinstance(payload, dict) and payload.get("format") == GENERATOR_FORMAT:
        bundle = load_generator(source)
        return LoadedGenerator(bundle.module, bundle.image_size)
    if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
        hparams = payload["hyper_parameters"]
        if "generator" not in hparams:
            raise UserError(f"{source} is a Lightning checkpoint, but not of the pix2pix stage")
        module = build_generator(dict(hparams["generator"]))
        weights = {
            key[len(LIGHTNING_PREFIX) :]: value
            for key, value in payload["state_dict"].items()
            if key.startswith(LIGHTNING_PREFIX)
        }
        load_state_dict_checked(module, weights, source)
        return LoadedGenerator(module.eval(), int(hparams.get("image_size", RELEASE_SIZE)))
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        module = build_generator(generator_config(**(release_options or {})))
        module.load_state_dict(from_reference(module, payload, str(source)))
        return LoadedGenerator(module.eval(), RELEASE_SIZE)
    raise UserError(
        f"{source} is neither generator.pt, a pix2pix Lightning checkpoint nor a plain state "
        "dict (latest_net_G.pth); check the path"
    )


def export_generator(
    loaded: LoadedGenerator,
    out: str | os.PathLike[str],
    kind: str,
    *,
    size: int | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
) -> float | None:
    """Write ``loaded`` to ``out`` as ``kind``; for ONNX return ONNX Runtime's max abs diff."""
    if kind not in FORMATS:
        raise UserError(f"format: unknown '{kind}'; use one of {', '.join(FORMATS)}")
    side = int(size or loaded.image_size)
    example = torch.rand(1, 3, side, side) * 2 - 1
    if kind == "torchscript":
        export_torchscript(loaded.module, example, out)
        return None
    export_onnx(loaded.module, example, out, opset=opset)
    # Check at another batch size too: the batch axis must really be dynamic.
    check = torch.rand(2, 3, side, side) * 2 - 1
    diff = onnx_max_abs_diff(loaded.module, out, check)
    if diff > tolerance:
        raise UserError(
            f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} > tolerance {tolerance:g}; "
            "try another opset (opset=...) or export format=torchscript"
        )
    return diff


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "pix2pix"), config_name="export")
def main(cfg: DictConfig) -> None:
    """Load ``cfg.ckpt``, export it to ``cfg.out``, report the ONNX check."""
    try:
        kind = cfg.format or ("onnx" if str(cfg.out).endswith(".onnx") else "torchscript")
        options = OmegaConf.to_container(cfg.generator, resolve=True)
        assert isinstance(options, dict)
        loaded = load_any_generator(cfg.ckpt, options)
        diff = export_generator(
            loaded,
            cfg.out,
            kind,
            size=cfg.size,
            opset=int(cfg.opset),
            tolerance=float(cfg.tolerance),
        )
    except UserError as err:
        fail(str(err))
    check = "" if diff is None else f" (ONNX Runtime vs PyTorch: max abs diff {diff:.2e})"
    print(f"exported {cfg.ckpt} as {kind} -> {cfg.out}{check}")


if __name__ == "__main__":
    main()
