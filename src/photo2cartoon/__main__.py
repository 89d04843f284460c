"""``python -m src.photo2cartoon +experiment=...``: train U-GAT-IT or photo2cartoon on unpaired
``trainA/`` (photos) and ``trainB/`` (cartoons), the chain's ``photo2cartoon`` stage.

Writes ``generator.pt`` (the A->B generator in the shared exported-generator format, loaded by
``cartoonize`` and the bot), ``grid.png`` (test images: input, CAM heatmap, translation,
reconstruction, for both directions), sample grids under ``samples/`` and Lightning checkpoints
under ``checkpoints/``. ``init_from`` starts from a released ``photo2cartoon_weights.pt`` or
U-GAT-IT ``*_params_*.pt``; ``onnx=true`` also writes ``generator.onnx``; ``identity=true``
(null: when dlib is installed) writes ``identity.json``, dlib's identity distance of each test
photo to its translation and the share of translations with a face found.
See ``configs/photo2cartoon/default.yaml`` for every option.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from src.common.errors import UserError
from src.common.stage import StageContext, run_stage

GENERATOR_FILE = "generator.pt"
ONNX_FILE = "generator.onnx"
GRID_FILE = "grid.png"
IDENTITY_FILE = "identity.json"
MODEL_KINDS = ("ugatit", "photo2cartoon")


def module_options(params: DictConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`Photo2CartoonTraining` from the stage's config node."""
    from src.photo2cartoon.training import DEFAULT_NGF, release_weights

    p = OmegaConf.to_container(params, resolve=True)
    assert isinstance(p, dict)
    kind = str(p["model"])
    if kind not in MODEL_KINDS:
        raise UserError(f"photo2cartoon.model: '{kind}' is not one of {', '.join(MODEL_KINDS)}")
    crop = int(p["data"]["crop_size"])
    side = 16 if kind == "photo2cartoon" else 4
    if crop % side:
        raise UserError(
            f"photo2cartoon.data.crop_size ({crop}) must be divisible by {side} for {kind}; "
            f"pick e.g. {crop - crop % side or side}"
        )
    for key in ("global_layers", "local_layers"):
        layers = int(p[key])
        if layers < 3 or crop < 4 * 2 ** (layers - 2):
            deepest = max(3, (crop // 4).bit_length() + 1)
            raise UserError(
                f"photo2cartoon.{key} ({layers}) does not fit crop_size {crop}: a critic of n "
                f"layers needs crop_size >= 4 * 2^(n-2); use at most {deepest} or larger images"
            )
    iterations = int(p["iterations"])
    if iterations < 1:
        raise UserError(f"photo2cartoon.iterations must be at least 1, got {iterations}")
    ngf = int(p["ngf"] or DEFAULT_NGF[kind])
    weights = release_weights(
        kind,
        **{name: p[f"{name}_weight"] for name in ("adv", "cycle", "identity", "cam", "faceid")},
    )
    faceid_weights = p.get("faceid_weights") or None
    if p.get("require_faceid") and weights.faceid > 0 and not faceid_weights:
        raise UserError(
            "photo2cartoon.faceid_weights: this run uses the face-ID loss (weight "
            f"{weights.faceid:g}), which needs MobileFaceNet weights; set "
            "photo2cartoon.faceid_weights=<model_mobilefacenet.pth>, or "
            "photo2cartoon.faceid_weight=0 to train without it"
        )
    return {
        "generator": {
            "kind": kind,
            "ngf": ngf,
            "img_size": crop,
            "light": bool(p["light"]),
            "n_res": int(p["n_res"]),
        },
        "ndf": int(p["ndf"] or ngf),
        "global_layers": int(p["global_layers"]),
        "local_layers": int(p["local_layers"]),
        "lr": float(p["lr"]),
        "betas": tuple(float(b) for b in p["betas"]),
        "weight_decay": float(p["weight_decay"]),
        "iterations": iterations,
        "decay": bool(p["decay"]),
        "weights": asdict(weights),
        "faceid_weights": faceid_weights,
        "sample_every": int(p["sample_every"]),
        "sample_count": int(p["sample_count"]),
        "metrics": tuple(p.get("metrics") or ()),
        "metrics_every": int(p["metrics_every"]),
        "inception": p.get("inception") or None,
    }


def initialise_from_release(module: Any, path: str) -> None:
    """Copy a released checkpoint's six networks into ``module`` (settings must match)."""
    from src.common.checkpoint import load_state_dict_checked
    from src.photo2cartoon.interop import load_reference_checkpoint

    networks = load_reference_checkpoint(path)
    targets = {
        "genA2B": module.gen_a2b,
        "genB2A": module.gen_b2a,
        "disGA": module.dis_ga,
        "disGB": module.dis_gb,
        "disLA": module.dis_la,
        "disLB": module.dis_lb,
    }
    for name, network in networks.items():
        load_state_dict_checked(targets[name], network.state_dict(), f"{path} [{name}]")


def write_identity_report(ctx: StageContext, module: Any, test_set: Any, trainer: Any) -> list[str]:
    """With ``photo2cartoon.identity`` (null: when dlib is installed), dlib's identity distance
    between every test photo (testA) and its translation and the share of translations with a
    face found: ``identity.json``, a line on stdout and ``metrics/identity_*`` in TensorBoard."""
    import torch

    from src.common import tags
    from src.common.fileio import atomic_write_json
    from src.faces.identity_dlib import identity_scorer
    from src.photo2cartoon.evaluate import identity_report

    scorer = identity_scorer(ctx.params.get("identity", False))
    if scorer is None:
        return []
    if test_set is None:
        print(f"{ctx.stage}: identity: no testA/ photos to score; skipped")
        return []
    photos = torch.stack([test_set[i]["A"] for i in range(len(test_set.paths_a))])
    scores = identity_report(module.gen_a2b, photos, scorer)
    atomic_write_json(ctx.out_dir / IDENTITY_FILE, scores)
    numbers = {tags.metric(k): float(v) for k, v in scores.items() if v is not None}
    for logger in trainer.loggers:
        logger.log_metrics(numbers, step=trainer.global_step)
    distance = scores["identity_distance"]
    print(
        f"{ctx.stage}: identity on {scores['identity_pairs']} test photos: face found in "
        f"{scores['identity_detection_rate']:.0%} of the translations"
        + ("" if distance is None else f", mean distance {distance:.3f}")
    )
    return [IDENTITY_FILE]


def train(ctx: StageContext) -> list[str]:
    """The stage function: train, then export the A->B generator and the final grid."""
    from hydra.utils import instantiate
    from PIL import Image

    from src.common.fileio import atomic_path
    from src.common.generators import save_generator
    from src.common.images import save_image
    from src.common.training import make_trainer, resume_checkpoint
    from src.common.visual import tensor_grid
    from src.photo2cartoon.training import Photo2CartoonTraining

    options = module_options(ctx.params)
    real_cartoons = Path(ctx.params.data.root) / "testB"
    if options["metrics"] and not real_cartoons.is_dir():
        raise UserError(
            f"photo2cartoon.metrics: FID/KID compare with {real_cartoons}, which does not "
            "exist; add testA/ and testB/ or set photo2cartoon.metrics=[]"
        )
    ckpt = resume_checkpoint(ctx)
    datamodule = instantiate(ctx.params.data)
    module = Photo2CartoonTraining(
        **options,
        png_dir=str(ctx.out_dir / "samples"),
        metrics_real=str(real_cartoons),
        metrics_cache=str(ctx.run_dir / "cache" / "metrics"),
    )
    init_from = ctx.params.get("init_from")
    if init_from and ckpt is None:
        initialise_from_release(module, str(init_from))

    # Manual optimisation steps two optimisers per iteration: Lightning counts both.
    every = int(ctx.params.checkpoint_every)
    with open_dict(ctx.cfg):
        if ctx.cfg.get("callbacks") and ctx.cfg.callbacks.get("model_checkpoint"):
            ctx.cfg.callbacks.model_checkpoint.every_n_epochs = None
            ctx.cfg.callbacks.model_checkpoint.every_n_train_steps = 2 * every
    trainer = make_trainer(
        ctx.cfg,
        max_epochs=-1,
        max_steps=2 * options["iterations"],
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    if not trainer.is_global_zero:
        return [GENERATOR_FILE, GRID_FILE]

    last = ctx.out_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(last) as tmp:
        trainer.save_checkpoint(tmp)
    identity_outputs = write_identity_report(ctx, module, datamodule.val_set, trainer)
    generator = module.gen_a2b.cpu().eval()
    image_size = options["generator"]["img_size"]
    save_generator(
        ctx.out_dir / GENERATOR_FILE,
        generator,
        family="photo2cartoon",
        config=options["generator"],
        image_size=image_size,
        meta={"direction": "A2B", "stage": ctx.stage, "iterations": options["iterations"]},
    )
    module.cpu()
    real_a, real_b = module.fixed_samples()
    grid = tensor_grid(module.sample_grid(real_a, real_b), nrow=len(real_a))
    save_image(Image.fromarray(grid.permute(1, 2, 0).numpy()), ctx.out_dir / GRID_FILE)
    outputs = [GENERATOR_FILE, GRID_FILE, "checkpoints/last.ckpt", *identity_outputs]
    if ctx.params.get("onnx"):
        from src.common.export import describe, export_checked_onnx

        # The export command's check: written only if ONNX Runtime matches PyTorch.
        report = export_checked_onnx(
            generator,
            ctx.out_dir / ONNX_FILE,
            image_size,
            label=f"{ctx.stage}: {describe('photo2cartoon', options['generator'])}",
        )
        print(f"{ctx.stage}: {ONNX_FILE}: {report.summary()}")
        outputs.append(ONNX_FILE)
    return outputs


if __name__ == "__main__":
    run_stage("photo2cartoon", train)
