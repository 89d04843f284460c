"""StyleGAN2 training (``cfg=stylegan2``): path length regularisation and style mixing in the
schedule, exact resume, and fine-tuning from a photo generator through the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from src.common.errors import UserError
from src.stylegan3 import training
from src.stylegan3.losses import mix_styles, path_length_penalty
from src.stylegan3.networks import stylegan2
from src.stylegan3.training import StyleGAN3Training, generator_kwargs
from tests.stylegan3.test_training import Interrupt
from tests.stylegan3.tiny import SG2_G_KWARGS
from tests.stylegan3.training_helpers import BATCH, RESOLUTION, build, fit, write_images

TINY_SG2 = {k: SG2_G_KWARGS[k] for k in ("z_dim", "w_dim", "channel_base", "channel_max")}


def sg2_options(data: Path, **changes: Any) -> training.TrainingOptions:
    """Options for a tiny StyleGAN2 at 16 px, batch 4, with the stylegan2 recipe's regularisers."""
    settings: dict[str, Any] = {
        "data": str(data),
        "resolution": RESOLUTION,
        "G_kwargs": generator_kwargs("stylegan2", RESOLUTION, BATCH, dict(TINY_SG2)),
        "D_kwargs": training.discriminator_kwargs(
            RESOLUTION, 0, 2, {"channel_base": 256, "channel_max": 32}
        ),
        "batch": BATCH,
        "kimg": BATCH / 1000,
        "snap": 1000,
        "aug": "none",
        "grid_size": 4,
        "grid_columns": 4,
        "seed": 3,
        "family": "stylegan2",
        "pl_weight": 2.0,
        "style_mixing": 0.9,
        "glr": 0.002,
    }
    settings.update(changes)
    return training.TrainingOptions(**settings)


def test_path_length_penalty_is_the_jacobian_norm_around_its_running_mean() -> None:
    torch.manual_seed(0)
    matrix = torch.randn(3 * 4 * 4, 3 * 5, requires_grad=True)
    ws = torch.randn(2, 3, 5, requires_grad=True)
    # Each sample's image is a linear map of its ws, so its Jacobian is the matrix itself.
    images = (ws.reshape(2, 15) @ matrix.t()).reshape(2, 3, 4, 4)
    torch.manual_seed(1)
    penalty, mean = path_length_penalty(images, ws, torch.tensor(1.0), decay=0.25)
    torch.manual_seed(1)
    noise = torch.randn(2, 3, 4, 4) / 4
    grads = [(matrix.detach().t() @ noise[i].flatten()).reshape(3, 5) for i in (0, 1)]
    lengths = torch.stack([g.square().sum(1).mean().sqrt() for g in grads])
    expected_mean = 1.0 + 0.25 * (lengths.mean() - 1.0)
    torch.testing.assert_close(mean, expected_mean.detach())
    torch.testing.assert_close(penalty.detach(), (lengths - expected_mean).square())
    assert penalty.requires_grad and not mean.requires_grad


def test_style_mixing_swaps_the_ws_from_a_cutoff() -> None:
    ws, other = torch.zeros(2, 6, 3), torch.ones(2, 6, 3)
    assert mix_styles(ws, other, 0.0) is ws
    torch.manual_seed(0)
    mixed = mix_styles(ws, other, 1.0)
    per_layer = mixed[0, :, 0]
    cutoff = int((per_layer == 0).sum())
    assert 1 <= cutoff < 6
    assert torch.equal(per_layer, torch.tensor([0.0] * cutoff + [1.0] * (6 - cutoff)))
    cutoffs = set()
    for seed in range(40):
        torch.manual_seed(seed)
        cutoffs.add(int((mix_styles(ws, other, 1.0)[0, :, 0] == 0).sum()))
    assert cutoffs == {1, 2, 3, 4, 5}


def test_one_step_runs_g_pl_d_r1_with_mixing(tmp_path: Path, monkeypatch) -> None:
    calls: dict[str, int] = {"mix": 0, "pl": 0}
    real_mix, real_pl = training.mix_styles, training.path_length_penalty

    def spy_mix(*args: Any) -> torch.Tensor:
        calls["mix"] += 1
        return real_mix(*args)

    def spy_pl(*args: Any) -> Any:
        calls["pl"] += 1
        return real_pl(*args)

    monkeypatch.setattr(training, "mix_styles", spy_mix)
    monkeypatch.setattr(training, "path_length_penalty", spy_pl)
    module = StyleGAN3Training(sg2_options(write_images(tmp_path / "data")))
    assert isinstance(module.G, stylegan2.Generator)
    opt_g, _ = module.configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    before = {k: v.clone() for k, v in module.G.state_dict().items()}

    trainer = fit(module, tmp_path / "run")

    # G main, the path length step and D's fakes each mixed styles; one lazy PL step ran.
    assert calls == {"mix": 3, "pl": 1}
    assert float(module.pl_mean) > 0
    # Adam counted two steps (main + path length) for the weights the penalty reaches.
    g_state = trainer.optimizers[0].state
    for param in (module.G.synthesis.b16.conv1.weight, module.G.mapping.fc0.weight):
        assert g_state[param]["step"] == 2
    assert any(not torch.equal(v, before[k]) for k, v in module.G.state_dict().items())
    grid = module.sample_grid()
    assert grid.shape == (4, 3, RESOLUTION, RESOLUTION) and torch.equal(grid, module.sample_grid())


def test_without_the_regularisers_g_takes_one_step(tmp_path: Path) -> None:
    options = sg2_options(write_images(tmp_path / "data"), pl_weight=0.0, style_mixing=0.0)
    module = StyleGAN3Training(options)
    trainer = fit(module, tmp_path / "run")
    g_state = trainer.optimizers[0].state
    assert all(g_state[param]["step"] == 1 for param in module.G.parameters())
    assert float(module.pl_mean) == 0


@pytest.mark.slow
def test_interrupt_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data")
    steps, snap_steps = 12, 4
    settings = {
        "kimg": steps * BATCH / 1000,
        "snap": snap_steps * BATCH / 1000,
        "r1_interval": 4,
        "pl_interval": 3,
        "ema_kimg": 0.02,
    }
    reference = build(sg2_options(data, **settings))
    fit(reference, tmp_path / "reference")

    interrupted = build(sg2_options(data, **settings))
    with pytest.raises(RuntimeError, match="simulated"):
        fit(interrupted, tmp_path / "resumed", callbacks=[Interrupt(snap_steps + 2)])
    resumed = build(sg2_options(data, **settings), init_seed=1)
    fit(resumed, tmp_path / "resumed", ckpt_path=tmp_path / "resumed" / "checkpoints" / "last.ckpt")

    assert resumed.iteration == reference.iteration == steps
    assert float(resumed.pl_mean) == float(reference.pl_mean) > 0
    for name in ("G_ema", "G", "D"):
        ours, theirs = getattr(resumed, name).state_dict(), getattr(reference, name).state_dict()
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=f"{name}.{key}")


def test_fine_tune_starts_from_the_photo_generator_and_checks_the_family(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data")
    photo = StyleGAN3Training(sg2_options(data))
    with torch.no_grad():
        for param in photo.G_ema.parameters():
            param.add_(0.25)
    path = photo.export(tmp_path / "network-final.pt", "photo")

    frozen_d = training.discriminator_kwargs(
        RESOLUTION, 2, 2, {"channel_base": 256, "channel_max": 32}
    )
    tuned = StyleGAN3Training(sg2_options(data, init_from=str(path), D_kwargs=frozen_d))
    for name in ("G", "G_ema", "D"):
        for key, value in getattr(photo, name).state_dict().items():
            assert torch.equal(getattr(tuned, name).state_dict()[key], value), f"{name}.{key}"
    # freeze_d 2: fromrgb and conv0 of the first block stay fixed.
    first = tuned.D.b16
    assert not any(
        p.requires_grad for p in [*first.fromrgb.parameters(), *first.conv0.parameters()]
    )
    assert all(p.requires_grad for p in first.conv1.parameters())

    sg3 = training.TrainingOptions(
        **{
            **sg2_options(data, init_from=str(path)).__dict__,
            "family": "stylegan3",
            "G_kwargs": generator_kwargs(
                "stylegan3-t",
                RESOLUTION,
                BATCH,
                {"z_dim": 16, "w_dim": 16, "channel_base": 512, "channel_max": 32},
            ),
        }
    )
    with pytest.raises(UserError, match="G is a stylegan2 generator but cfg builds a stylegan3"):
        StyleGAN3Training(sg3)


def test_stage_options_for_cfg_stylegan2() -> None:
    from src.stylegan3.__main__ import training_options
    from tests.test_configs import compose_stage

    cfg = compose_stage(
        "stylegan3", ["stylegan3.cfg=stylegan2", "stylegan3.data=/d", "stylegan3.freeze_d=3"]
    )
    options = training_options(cfg.stylegan3, seed=0)
    assert options.family == "stylegan2"
    assert (options.pl_weight, options.pl_batch_shrink, options.pl_decay) == (2.0, 2, 0.01)
    assert (options.pl_interval, options.style_mixing, options.glr) == (4, 0.9, 0.002)
    assert options.G_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert options.D_kwargs["epilogue_kwargs"] == {"mbstd_group_size": 4}
    assert options.D_kwargs["block_kwargs"] == {"freeze_layers": 3}
    assert "magnitude_ema_beta" not in options.G_kwargs
    sg3 = training_options(compose_stage("stylegan3", ["stylegan3.data=/d"]).stylegan3, seed=0)
    assert (sg3.pl_weight, sg3.style_mixing, sg3.glr, sg3.family) == (0, 0, 0.0025, "stylegan3")


def test_toonify_sg2_experiment_fine_tunes_the_official_256_stylegan2() -> None:
    from src.stylegan3.__main__ import training_options
    from tests.test_configs import compose_stage

    cfg = compose_stage("stylegan3", ["+experiment=toonify_sg2_256", "stylegan3.data=/cartoons"])
    options = training_options(cfg.stylegan3, seed=0)
    assert options.family == "stylegan2" and options.pl_weight == 2
    assert str(options.init_from).endswith("weights/stylegan2-ffhqu-256x256.pkl")
    assert options.G_kwargs["channel_base"] == 16384
    assert options.G_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert options.ema_rampup is None and options.ada_kimg == 100


def stage_overrides(stage: str, root: Path, data: Path, *extra: str) -> list[str]:
    """A tiny 16 px cfg=stylegan2 run of ``stage`` (stylegan3 or its stylegan3_photo alias)."""
    return [
        f"paths.root_dir={root}",
        "run_name=sg2",
        "logger=none",
        "callbacks=minimal",
        f"{stage}.cfg=stylegan2",
        f"{stage}.data={data}",
        f"{stage}.resolution=16",
        f"{stage}.batch=4",
        f"{stage}.kimg=0.008",
        f"{stage}.snap=0.008",
        f"{stage}.num_workers=0",
        f"{stage}.mbstd_group=2",
        f"{stage}.grid_size=4",
        f"{stage}.aug=none",
        f"{stage}.G.z_dim=16",
        f"{stage}.G.w_dim=16",
        f"{stage}.G.channel_base=128",
        f"{stage}.G.channel_max=32",
        f"{stage}.D.channel_base=256",
        f"{stage}.D.channel_max=32",
        *extra,
    ]


@pytest.mark.slow
def test_stages_train_a_photo_generator_then_fine_tune_it(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from src.common.stage import CONFIG_DIR, execute_stage
    from src.stylegan3.__main__ import train
    from src.stylegan3.legacy import load_networks

    photos = write_images(tmp_path / "photos", seed=1)
    cartoons = write_images(tmp_path / "cartoons", seed=2)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        photo_cfg = compose("stylegan3_photo", stage_overrides("stylegan3_photo", tmp_path, photos))
    execute_stage("stylegan3_photo", train, photo_cfg)
    photo = Path(photo_cfg.out_dir) / "network-final.pt"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        tune_cfg = compose(
            "stylegan3",
            stage_overrides(
                "stylegan3",
                tmp_path,
                cartoons,
                f"stylegan3.init_from={photo}",
                "stylegan3.freeze_d=2",
            ),
        )
    execute_stage("stylegan3", train, tune_cfg)

    start, tuned = load_networks(photo), load_networks(Path(tune_cfg.out_dir) / "network-final.pt")
    assert isinstance(tuned["G_ema"], stylegan2.Generator)
    assert any(
        not torch.equal(v, start["G"].state_dict()[k]) for k, v in tuned["G"].state_dict().items()
    )
    # freeze_d 2 keeps D's fromrgb and first conv at the photo generator's values.
    for key in ("b16.fromrgb.weight", "b16.conv0.weight"):
        assert torch.equal(tuned["D"].state_dict()[key], start["D"].state_dict()[key])
    assert not torch.equal(
        tuned["D"].state_dict()["b16.conv1.weight"], start["D"].state_dict()["b16.conv1.weight"]
    )
    assert (Path(tune_cfg.out_dir) / "init_vs_final.png").is_file()


def test_g_ema_samples_in_eval_mode_with_fused_convs(tmp_path: Path, monkeypatch) -> None:
    # As the reference: G trains in training mode (unfused modulated convs under the stylegan2
    # cfg's inference_only rule), G_ema stays in eval mode, so grids and metrics run fused.
    calls: list[bool] = []
    real = stylegan2.modulated_conv2d

    def spy(*args: Any, fused_modconv: bool = True, **kwargs: Any) -> torch.Tensor:
        calls.append(fused_modconv)
        return real(*args, fused_modconv=fused_modconv, **kwargs)

    monkeypatch.setattr(stylegan2, "modulated_conv2d", spy)
    module = StyleGAN3Training(sg2_options(write_images(tmp_path / "data"), pl_weight=0.0))
    fit(module, tmp_path / "run")
    assert False in calls, "G trained with fused convs"
    assert module.G.training and not module.G_ema.training
    calls.clear()
    module.sample_grid()
    assert calls and all(calls)


def test_fp16_blocks_follow_num_fp16_res(tmp_path: Path) -> None:
    from src.stylegan3.precision import fp16_layers

    data = write_images(tmp_path / "data")
    module = StyleGAN3Training(sg2_options(data))
    # The recipe's num_fp16_res 4 at 16 px: blocks from max(2 ** (4 + 1 - 4), 8) = 8 px up.
    for generator in (module.G, module.G_ema):
        assert [block.resolution for block in fp16_layers(generator)] == [8, 16]
        assert generator.synthesis.b16.conv1.conv_clamp == 256
    fp32_kwargs = generator_kwargs("stylegan2", RESOLUTION, BATCH, {**TINY_SG2, "num_fp16_res": 0})
    assert fp16_layers(StyleGAN3Training(sg2_options(data, G_kwargs=fp32_kwargs)).G) == []
