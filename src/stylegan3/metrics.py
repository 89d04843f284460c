"""FID / KID of StyleGAN3 generators, on their own and during training.

``python -m src.stylegan3.metrics ckpt=... data=... metrics=[fid,kid] num=... inception=...``
prints a table and writes a JSON result (see ``configs/stylegan3/metrics.yaml``).
:func:`training_metrics` gives the training stage a function that measures its G_ema at every
snapshot. Both go through :func:`src.common.metrics.compute_metrics`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from rich.console import Console
from rich.table import Table
from torch import nn

from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.metrics import MetricsResult, build_extractor, compute_metrics
from src.common.stage import CONFIG_DIR, fail

# metrics_kwargs a training config may set (besides `inception`, the weights path).
TRAINING_KWARGS = ("batch_size", "kid_subset_size", "kid_subsets", "max_real", "seed")


def generator_sampler(
    generator: nn.Module, device: torch.device, seed: int = 0, psi: float = 1.0
) -> Callable[[int], torch.Tensor]:
    """``count -> images`` from ``generator`` with latents from its own seeded stream, so the
    same seed always measures the same latents and the global RNG is not touched."""
    latents = torch.Generator().manual_seed(seed)

    def sample(count: int) -> torch.Tensor:
        z = torch.randn([count, generator.z_dim], generator=latents).to(device)
        c = torch.zeros([count, generator.c_dim], device=device)
        return generator(z, c, truncation_psi=psi)

    return sample


def training_metrics(options: Any, cache_dir: str | os.PathLike[str]) -> Callable[[Any], dict]:
    """The snapshot callback's metrics function for :class:`TrainingOptions` ``options``.

    It measures ``module.G_ema`` with ``options.metrics`` over ``options.metrics_num`` images
    against ``options.data`` at ``options.resolution`` and returns ``fid``, ``kid`` and
    ``kid_std`` (floats). ``options.metrics_kwargs``: ``inception`` (weights path) and any of
    :data:`TRAINING_KWARGS`. The extractor is built at the first call.
    """
    kwargs = dict(options.metrics_kwargs)
    inception = kwargs.pop("inception", None)
    unknown = sorted(set(kwargs) - set(TRAINING_KWARGS))
    if unknown:
        raise UserError(
            f"metrics_kwargs: unknown {', '.join(unknown)}; "
            f"allowed: inception, {', '.join(TRAINING_KWARGS)}"
        )
    extractors: list[Any] = []

    def measure(module: Any) -> dict[str, float]:
        if not extractors:
            extractors.append(build_extractor(inception))
        result = compute_metrics(
            generator_sampler(module.G_ema, module.device, seed=int(kwargs.get("seed", 0))),
            options.data,
            metrics=tuple(options.metrics),
            num=int(options.metrics_num),
            extractor=extractors[0],
            cache_dir=cache_dir,
            resolution=int(options.resolution),
            device=module.device,
            **{k: v for k, v in kwargs.items() if k != "seed"},
        )
        return {k: v for k, v in result.items() if not k.startswith("num_")}

    return measure


def evaluate(cfg: DictConfig) -> tuple[MetricsResult, Path]:
    """Measure the configured checkpoint; returns the result and the JSON file written."""
    from src.stylegan3.legacy import load_networks

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    metrics = list(cfg.metrics) if not isinstance(cfg.metrics, str) else [cfg.metrics]
    networks = load_networks(cfg.ckpt)
    if cfg.network not in networks:
        raise UserError(f"network: {cfg.ckpt} has no {cfg.network!r}; it has {sorted(networks)}")
    generator = networks[cfg.network].to(device).eval()
    if generator.c_dim:
        raise UserError(f"ckpt: {cfg.ckpt} is a conditional generator; metrics need c_dim 0")
    result = compute_metrics(
        generator_sampler(generator, device, seed=int(cfg.seed), psi=float(cfg.psi)),
        cfg.data,
        metrics=metrics,
        num=int(cfg.num),
        extractor=build_extractor(cfg.inception),
        cache_dir=cfg.cache_dir,
        batch_size=int(cfg.batch_size),
        kid_subset_size=int(cfg.kid_subset_size),
        kid_subsets=int(cfg.kid_subsets),
        resolution=int(cfg.resolution or generator.img_resolution),
        max_real=cfg.max_real,
        device=device,
        seed=int(cfg.seed),
    )
    ckpt = Path(cfg.ckpt)
    out = Path(cfg.out) if cfg.out else ckpt.with_name(f"metrics-{ckpt.stem}.json")
    report = {
        **result.to_json(),
        "ckpt": str(ckpt),
        "network": cfg.network,
        "data": str(cfg.data),
        "psi": float(cfg.psi),
        "seed": int(cfg.seed),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_json(out, report)
    return result, out


def result_table(result: MetricsResult, title: str) -> Table:
    """The metrics as a rich table whose caption says which extractor made them."""
    style = "bold red" if result.standin else "dim"
    table = Table(title=title, caption=f"extractor: {result.extractor}", caption_style=style)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "fid" in result:
        table.add_row("FID", f"{result['fid']:.3f}")
    if "kid" in result:
        table.add_row("KID x 10^3", f"{result['kid'] * 1e3:.3f} ± {result['kid_std'] * 1e3:.3f}")
    table.add_row("images", f"{int(result['num_fake'])} generated, {int(result['num_real'])} real")
    return table


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "stylegan3"), config_name="metrics")
def main(cfg: DictConfig) -> None:
    """Compute, print the table and say where the JSON went."""
    try:
        result, out = evaluate(cfg)
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    console = Console()
    console.print(result_table(result, f"{Path(cfg.ckpt).name} ({cfg.network})"))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
