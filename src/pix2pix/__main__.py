"""``python -m src.pix2pix +experiment=...``: train pix2pix on aligned pairs (the chain's
``pix2pix`` stage).

Reads pairs from ``pix2pix.data`` (``root`` with A/ and B/, or a CSV / JSONL ``manifest``),
writes Lightning checkpoints under ``checkpoints/``, validation grids (input | output |
target) under ``grids/`` with the last one copied to ``val_grid.png``, and ``generator.pt``:
the exported generator that ``cartoonize``, the bot and ``src.pix2pix.export`` load. With
``ground_truth.root`` set it also scores the result on those pairs (``ground_truth.json``,
``ground_truth_grid.png``). See ``configs/pix2pix/default.yaml`` for every option.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.fileio import atomic_path, atomic_write_json
from src.common.stage import StageContext, run_stage

GENERATOR_FILE = "generator.pt"
VAL_GRID = "val_grid.png"
GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_GRID = "ground_truth_grid.png"


def as_dict(node: DictConfig | None) -> dict[str, Any]:
    """A resolved plain dict of a config node (empty for null)."""
    if node is None:
        return {}
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return container


def build_module(params: DictConfig, grid_dir: Path | None) -> Any:
    """The :class:`Pix2PixModule` the config describes (D sees A and B stacked on channels)."""
    from src.pix2pix.model import Pix2PixModule
    from src.pix2pix.networks import generator_config

    generator = generator_config(**as_dict(params.generator))
    discriminator = as_dict(params.discriminator)
    discriminator["input_nc"] = generator["input_nc"] + generator["output_nc"]
    return Pix2PixModule(
        generator,
        discriminator,
        gan_mode=str(params.gan_mode),
        lambda_l1=float(params.lambda_l1),
        lr=float(params.lr),
        betas=tuple(float(b) for b in params.betas),
        n_epochs=int(params.n_epochs),
        n_epochs_decay=int(params.n_epochs_decay),
        init_type=str(params.init_type),
        init_gain=float(params.init_gain),
        grid_samples=int(params.grid_samples),
        grid_dir=None if grid_dir is None else str(grid_dir),
        image_size=int(params.data.crop_size),
    )


def train(ctx: StageContext) -> list[str]:
    """The stage function: fit, export ``generator.pt``, score on the ground truth if set."""
    from hydra.utils import instantiate

    from src.common.generators import save_generator
    from src.common.training import make_trainer, resume_checkpoint
    from src.faces.identity_dlib import identity_scorer
    from src.pix2pix.evaluate import evaluate_pairs, good_pairs

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
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("val/", "metrics/"))
    }
    save_generator(
        ctx.out_dir / GENERATOR_FILE,
        module.generator,
        family="pix2pix",
        config=module.hparams.generator,
        image_size=image_size,
        meta={"stage": ctx.stage, "epochs": epochs, "val": metrics},
    )
    outputs = [GENERATOR_FILE, "checkpoints/last.ckpt"]
    # A resumed run that had already finished logs no new grid: take the newest one on disk.
    grids = sorted((ctx.out_dir / "grids").glob("*.png"))
    latest_grid = module.last_grid or (grids[-1] if grids else None)
    if latest_grid is not None:
        with atomic_path(ctx.out_dir / VAL_GRID) as tmp:
            shutil.copyfile(latest_grid, tmp)
        outputs.append(VAL_GRID)

    truth = p.get("ground_truth")
    if truth is not None and truth.get("root"):
        pairs = good_pairs(truth.root, int(truth.max_pairs))
        scores = evaluate_pairs(
            module.generator,
            pairs,
            image_size,
            grid_path=ctx.out_dir / GROUND_TRUTH_GRID,
            grid_samples=int(p.grid_samples),
            identity=identity_scorer(truth.get("identity", False)),
        )
        atomic_write_json(ctx.out_dir / GROUND_TRUTH_JSON, {"root": str(truth.root), **scores})
        print(
            f"{ctx.stage}: on {scores['pairs']} ground-truth pairs: L1 {scores['l1']:.4f}, "
            f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}"
        )
        outputs += [GROUND_TRUTH_JSON, GROUND_TRUTH_GRID]
    return outputs


if __name__ == "__main__":
    run_stage("pix2pix", train)
