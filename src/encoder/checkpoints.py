"""Encoder files: ours (``toonforge.encoder/1``) and the official e4e / ReStyle checkpoints.

Official checkpoints (e4e's ``e4e_ffhq_encode.pt``, stylegan3-editing's ``restyle_e4e_ffhq.pt``
and ``restyle_pSp_ffhq.pt``) are dicts ``{state_dict, opts, latent_avg}`` whose ``state_dict``
holds ``encoder.*`` (our parameter names after the prefix) and ``decoder.*`` (the generator,
ignored: the generator comes from the configured pickle or checkpoint instead). They load with
``weights_only`` (no code runs); the architecture (widths, units, styles, input channels) is
read from the tensor shapes, the kind from ``opts.encoder_type`` (or the ``kind`` argument).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from src.common.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from src.common.errors import UserError
from src.encoder.networks import KINDS, IRSEEncoder, build_encoder, encoder_config

FORMAT = "toonforge.encoder/1"
# opts.encoder_type of the official releases -> our kind.
OFFICIAL_TYPES = {
    "Encoder4Editing": "e4e",
    "ProgressiveBackboneEncoder": "restyle_e4e",
    "BackboneEncoder": "restyle_psp",
}
ENCODER_PREFIX = "encoder."
BODY_CONV = re.compile(r"^body\.(\d+)\.res_layer\.1\.weight$")
HEAD_CONV = re.compile(r"^styles\.0\.convs\.\d+\.weight$")


@dataclass
class EncoderBundle:
    """A loaded encoder, the latent average its outputs are added to ([n_styles, w_dim]) and
    whether ReStyle iterations apply (6 input channels); ``official``: read from an e4e/ReStyle
    release (whose own generator weights are not used)."""

    encoder: IRSEEncoder
    latent_avg: torch.Tensor
    config: dict[str, Any]
    source: str
    official: bool = False

    @property
    def iterative(self) -> bool:
        """True for ReStyle encoders (they see the photo and the current reconstruction)."""
        return self.encoder.in_channels == 6


def save_encoder(
    path: str | os.PathLike[str], encoder: IRSEEncoder, latent_avg: torch.Tensor
) -> Path:
    """Write our encoder file atomically: config, weights and the latent average."""
    config = encoder_config(encoder, _se_reduction(encoder.state_dict()))
    payload = {
        "format": FORMAT,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "latent_avg": expand_latent_avg(latent_avg.detach().cpu(), encoder.n_styles, str(path)),
    }
    return save_checkpoint(payload, path)


def expand_latent_avg(latent_avg: Any, n_styles: int, source: str) -> torch.Tensor:
    """``latent_avg`` as [n_styles, w_dim]: e4e saves [w_dim] or [n_styles, w_dim]."""
    if not isinstance(latent_avg, torch.Tensor) or latent_avg.ndim not in (1, 2):
        raise UserError(f"{source}: latent_avg is not a [w_dim] or [n_styles, w_dim] tensor")
    if latent_avg.ndim == 1:
        latent_avg = latent_avg.unsqueeze(0).repeat(n_styles, 1)
    if latent_avg.shape[0] != n_styles:
        raise UserError(
            f"{source}: latent_avg has {latent_avg.shape[0]} rows for {n_styles} encoder styles"
        )
    return latent_avg.float()


def _se_reduction(state: dict[str, torch.Tensor]) -> int | None:
    """The squeeze-and-excitation reduction (widest gate's in / out channels), None without SE."""
    gates = [v for k, v in state.items() if k.endswith("res_layer.5.fc1.weight")]
    if not gates:
        return None
    widest = max(gates, key=lambda gate: int(gate.shape[1]))
    return max(1, int(widest.shape[1]) // max(1, int(widest.shape[0])))


def infer_config(state: dict[str, torch.Tensor], kind: str, source: str) -> dict[str, Any]:
    """The encoder config of an official state dict, read from its tensor shapes: stages 2-4
    open with a 1x1-conv shortcut (stage 1 keeps the stem's width), the map-to-style head's
    convs halve input_size / 16 down to 1."""
    try:
        stem = state["input_layer.0.weight"]
        total = len({int(m.group(1)) for k in state if (m := BODY_CONV.match(k))})
        starts = [0] + [i for i in range(total) if f"body.{i}.shortcut_layer.0.weight" in state]
        widths = [int(state[f"body.{i}.res_layer.1.weight"].shape[0]) for i in starts]
        n_styles = len({k.split(".")[1] for k in state if k.startswith("styles.")})
        w_dim = int(state["styles.0.linear.weight"].shape[0])
        head_convs = sum(1 for k in state if HEAD_CONV.match(k))
    except (KeyError, IndexError) as err:
        raise UserError(
            f"{source}: not an e4e/ReStyle IR-SE encoder (missing {err}); pass the official "
            "checkpoint or one of ours"
        ) from None
    if len(starts) != 4 or not head_convs:
        raise UserError(
            f"{source}: an IR-SE body of {len(starts)} stages; e4e/ReStyle encoders have 4"
        )
    ends = [*starts[1:], total]
    return {
        "kind": kind,
        "n_styles": n_styles,
        "w_dim": w_dim,
        "input_size": 16 * 2**head_convs,
        "in_channels": int(stem.shape[1]),
        "widths": widths,
        "units": [end - start for start, end in zip(starts, ends, strict=True)],
        "se_reduction": _se_reduction(state),
    }


def read_official(
    path: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """(config, encoder state dict, latent_avg) of an official e4e / ReStyle checkpoint."""
    source = str(path)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(
            f"{source} is neither a {FORMAT} file nor an official e4e/ReStyle checkpoint "
            "(a dict with state_dict); pass one of those"
        )
    state = {
        k[len(ENCODER_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if isinstance(k, str) and k.startswith(ENCODER_PREFIX)
    }
    if not state:
        raise UserError(f"{source}: its state_dict has no encoder.* weights")
    opts = checkpoint.get("opts") if isinstance(checkpoint.get("opts"), dict) else {}
    if kind is None:
        encoder_type = str(opts.get("encoder_type", ""))
        kind = OFFICIAL_TYPES.get(encoder_type)
        if kind is None:
            raise UserError(
                f"{source}: opts.encoder_type={encoder_type!r} is not one of "
                f"{', '.join(OFFICIAL_TYPES)}; set the encoder kind ({', '.join(KINDS)})"
            )
    if "latent_avg" not in checkpoint:
        raise UserError(f"{source} has no latent_avg; toonforge adds the encoder's output to it")
    return infer_config(state, kind, source), state, checkpoint["latent_avg"]


def load_encoder(path: str | os.PathLike[str], kind: str | None = None) -> EncoderBundle:
    """Our encoder file or an official e4e / ReStyle checkpoint, in eval mode."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"encoder file {source} does not exist; check encoder= in your config")
    payload = load_checkpoint(source)
    official = not (isinstance(payload, dict) and payload.get("format") == FORMAT)
    if not official:
        try:
            config = dict(payload["config"])
            state = dict(payload["state_dict"])
            latent_avg = payload["latent_avg"]
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(
                f"{source} is a damaged {FORMAT} file ({err!r}); save it again"
            ) from None
    else:
        config, state, latent_avg = read_official(source, kind)
    try:
        encoder = build_encoder(config)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    except Exception as err:  # a saved config is data: any failure to build is the file's
        raise UserError(f"{source}: its encoder config does not build ({err!r})") from None
    load_state_dict_checked(encoder, state, str(source))
    encoder.eval()
    latent_avg = expand_latent_avg(latent_avg, encoder.n_styles, str(source))
    return EncoderBundle(encoder, latent_avg, config, str(source), official)
