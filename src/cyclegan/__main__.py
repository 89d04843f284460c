"""``python -m src.cyclegan +experiment=...``: train CycleGAN on two unaligned image folders (the
chain's ``cyclegan`` stage).

Reads ``cyclegan.data.root`` (trainA/ trainB/, and testA/ testB/ for validation), writes
Lightning checkpoints under ``checkpoints/``, validation grids (A -> B -> A and B -> A -> B)
under ``grids/``, a final ``grid.png`` of both round trips, and the exported generators
``generator_AtoB.pt`` and ``generator_BtoA.pt`` (``generator.pt`` is the A -> B one, which
``cartoonize`` and the bot load). With ``export_reference`` it also writes the reference
layout (``latest_net_G_A.pth``, ``latest_net_G_B.pth``). See ``configs/cyclegan/default.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.stage import StageContext, run_stage

GENERATOR_FILE = "generator.pt"
DIRECTION_FILES = {"AtoB": "generator_AtoB.pt", "BtoA": "generator_BtoA.pt"}
REFERENCE_FILES = {"AtoB": "latest_net_G_A.pth", "BtoA": "latest_net_G_B.pth"}
GRID_FILE = "grid.png"


def build_module(params: DictConfig, grid_dir: Path | None) -> Any:
    """The :class:`CycleGANModule` the config describes."""
    from src.cyclegan.model import CycleGANModule
    from src.cyclegan.networks import generator_config
    from src.pix2pix.__main__ import as_dict

    generator = generator_config(**as_dict(params.generator))
    discriminator = as_dict(params.discriminator)
    discriminator["input_nc"] = generator["output_nc"]
    return CycleGANModule(
        generator,
        discriminator,
        gan_mode=str(params.gan_mode),
        lambda_A=float(params.lambda_A),
        lambda_B=float(params.lambda_B),
        lambda_identity=float(params.lambda_identity),
        pool_size=int(params.pool_size),
        lr=float(params.lr),
        betas=tuple(float(b) for b in params.betas),
        n_epochs=int(params.n_epochs),
        n_epochs_decay=int(params.n_epochs_decay),
        init_type=str(params.init_type),
        init_gain=float(params.init_gain),
        grid_samples=int(params.grid_samples),
        grid_dir=None if grid_dir is None else str(grid_dir),
    )


def round_trip_grid(module: Any, datamodule: Any, samples: int) -> torch.Tensor:
    """Rows of A | A->B | A->B->A | B | B->A | B->A->B for the first validation images."""
    from src.common.visual import tensor_grid

    loader = datamodule.val_dataloader() or datamodule.train_dataloader()
    rows: list[torch.Tensor] = []
    module.eval()
    with torch.no_grad():
        for batch in loader:
            real_a = batch["A"].to(module.device)
            real_b = batch["B"].to(module.device)
            out = module.cycles(real_a, real_b)
            columns = [real_a, out["fake_b"], out["rec_a"], real_b, out["fake_a"], out["rec_b"]]
            rows.append(torch.stack(columns, dim=1).flatten(0, 1).cpu())
            if sum(len(r) for r in rows) >= 6 * samples:
                break
    return tensor_grid(torch.cat(rows)[: 6 * samples], nrow=6)


def train(ctx: StageContext) -> list[str]:
    """The stage function: fit, export both generators, write the round-trip grid."""
    from hydra.utils import instantiate
    from PIL import Image

    from src.common.generators import save_generator
    from src.common.images import save_image
    from src.common.training import make_trainer, resume_checkpoint
    from src.cyclegan.interop import save_reference_generator

    p = ctx.params
    datamodule = instantiate(p.data)
    module = build_module(p, ctx.out_dir / "grids")
    epochs = int(p.n_epochs) + int(p.n_epochs_decay)
    if epochs < 1:
        raise UserError("n_epochs + n_epochs_decay must be at least 1")
    trainer = make_trainer(ctx.cfg, max_epochs=epochs)
    ckpt = resume_checkpoint(ctx)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    if not trainer.is_global_zero:
        return []

    image_size = int(p.data.crop_size)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    generators = {"AtoB": module.generator_ab, "BtoA": module.generator_ba}
    outputs = ["checkpoints/last.ckpt", GRID_FILE]
    for direction, generator in generators.items():
        meta = {"stage": ctx.stage, "direction": direction, "epochs": epochs, "val": metrics}
        names = [DIRECTION_FILES[direction]] + ([GENERATOR_FILE] if direction == "AtoB" else [])
        for name in names:
            save_generator(
                ctx.out_dir / name,
                generator,
                family="cyclegan",
                config=module.hparams.generator,
                image_size=image_size,
                meta=meta,
            )
            outputs.append(name)
        if p.export_reference:
            save_reference_generator(generator, ctx.out_dir / REFERENCE_FILES[direction])
            outputs.append(REFERENCE_FILES[direction])
    grid = round_trip_grid(module, datamodule, int(p.grid_samples))
    save_image(Image.fromarray(grid.permute(1, 2, 0).numpy()), ctx.out_dir / GRID_FILE)
    return outputs


if __name__ == "__main__":
    run_stage("cyclegan", train)
