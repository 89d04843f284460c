"""StyleGAN3 training: the step schedule, R1, EMA, data order, transfer learning, resume."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from src.common.checkpoint import CheckpointMismatchError
from src.common.errors import UserError
from src.stylegan3.dataset import ImageFolderDataset, InfiniteSampler
from src.stylegan3.discriminator import Discriminator
from src.stylegan3.legacy import build_network
from src.stylegan3.losses import (
    blur,
    blur_sigma,
    ema_beta,
    gamma_for_resolution,
    r1_penalty,
    update_ema,
)
from src.stylegan3.precision import fp16_layers
from src.stylegan3.training import StyleGAN3Training
from tests.stylegan3.official import OfficialModules, write_pickle
from tests.stylegan3.official import snapshot as official_snapshot
from tests.stylegan3.training_helpers import (
    BATCH,
    RESOLUTION,
    build,
    fit,
    tiny_options,
    write_images,
)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("architecture", ["stylegan3-t", "stylegan3-r"])
def test_one_training_step_updates_g_d_and_g_ema(tmp_path: Path, architecture: str) -> None:
    data = write_images(tmp_path / "data")
    options = tiny_options(data, architecture, kimg=BATCH / 1000, blur_sigma=10.0)
    module = StyleGAN3Training(options)
    before = {name: snapshot(getattr(module, name)) for name in ("G", "D", "G_ema")}

    fit(module, tmp_path / "run")

    assert module.cur_nimg == BATCH and module.iteration == 1
    for name in ("G", "D", "G_ema"):
        assert changed(before[name], getattr(module, name)), f"{name} did not change"
    if architecture == "stylegan3-r":
        assert all(
            getattr(module.G.synthesis, n).conv_kernel == 1 for n in module.G.synthesis.layer_names
        )
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "grids" / f"fakes_{BATCH:06d}.png").is_file()


def test_progress_bars_count_kimg_of_the_run(tmp_path: Path) -> None:
    module = StyleGAN3Training(tiny_options(write_images(tmp_path / "data"), kimg=1.6))
    module.cur_nimg, module.iteration = 800, 100
    position = module.progress_position()
    assert (position.done, position.total, position.label) == (100, 400, "kimg 0.8/1.6")


def test_d_optimizer_carries_the_lazy_r1_correction(tmp_path: Path) -> None:
    module = StyleGAN3Training(tiny_options(write_images(tmp_path / "data"), r1_interval=16))
    opt_g, opt_d = module.configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == 0.0025 and opt_g.param_groups[0]["betas"] == (0, 0.99)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


def test_r1_penalty_equals_direct_autograd_on_a_small_d() -> None:
    torch.manual_seed(0)
    d = Discriminator(
        c_dim=0,
        img_resolution=8,
        img_channels=3,
        channel_base=128,
        channel_max=16,
        epilogue_kwargs={"mbstd_group_size": 2},
    )
    images = torch.randn(4, 3, 8, 8)

    x = images.clone().requires_grad_(True)
    penalty = r1_penalty(x, d(x, None))

    y = images.clone().requires_grad_(True)
    (direct,) = torch.autograd.grad(d(y, None).sum(), y)
    torch.testing.assert_close(penalty, direct.square().sum(dim=[1, 2, 3]))
    # The penalty is trainable: its gradient reaches D's weights.
    penalty.sum().backward()
    assert d.b8.conv0.weight.grad is not None and d.b8.conv0.weight.grad.abs().sum() > 0


def test_gamma_presets_and_blur_fade() -> None:
    assert [gamma_for_resolution(r) for r in (128, 256, 512, 1024)] == [0.5, 2, 8, 32]
    assert blur_sigma(0, 10, 200) == 10 and blur_sigma(100_000, 10, 200) == 5
    assert blur_sigma(300_000, 10, 200) == 0 and blur_sigma(0, 10, 0) == 0
    flat = torch.ones(1, 3, 16, 16)
    noisy = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(blur(flat, 2.0)[..., 6:10, 6:10], flat[..., 6:10, 6:10])
    assert blur(noisy, 2.0).std() < noisy.std() / 2 and torch.equal(blur(noisy, 0), noisy)


def test_ema_half_life_rampup_and_buffers_copied() -> None:
    # Half-life of ema_kimg thousand images: after that many images the old weight is halved.
    beta = ema_beta(32, 10**9, ema_kimg=10, rampup=None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    assert ema_beta(32, 1000, ema_kimg=10, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, beta=0.25)
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.75))  # lerp(2, 1, 0.25)
    torch.testing.assert_close(ema.running_mean, torch.full((3,), 5.0))


def test_mirror_doubles_the_set_with_flips(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data", count=3)
    plain = ImageFolderDataset(data, RESOLUTION)
    mirrored = ImageFolderDataset(data, RESOLUTION, mirror=True)
    assert len(plain) == 3 and len(mirrored) == 6
    torch.testing.assert_close(mirrored[4], plain[1].flip(2))
    assert plain[0].shape == (3, RESOLUTION, RESOLUTION)
    assert plain[0].min() >= -1 and plain[0].max() <= 1


def test_infinite_sampler_resumes_and_splits_ranks() -> None:
    def take(sampler: InfiniteSampler, count: int) -> list[int]:
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]

    full = take(InfiniteSampler(5, seed=1), 23)
    assert sorted(full[:5]) == list(range(5)) and sorted(full[5:10]) == list(range(5))
    assert full[:5] != full[5:10] or full[5:10] != full[10:15]
    assert take(InfiniteSampler(5, seed=1, start=7), 16) == full[7:23]
    rank0 = take(InfiniteSampler(5, seed=1, rank=0, world=2, start=2), 5)
    rank1 = take(InfiniteSampler(5, seed=1, rank=1, world=2, start=2), 5)
    assert rank0 == full[4:14:2] and rank1 == full[5:15:2]


def test_missing_data_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nowhere", RESOLUTION)


class Interrupt(L.Callback):
    """Stops a run with an exception after ``steps`` training steps, like a killed job."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.iteration >= self.steps:
            raise RuntimeError("simulated interruption")


def augment_modes() -> list[str]:
    try:
        import src.stylegan3.augment  # noqa: F401
    except ImportError:
        return ["none"]
    return ["none", "ada"]


@pytest.mark.slow
@pytest.mark.parametrize("aug", augment_modes())
def test_interrupt_and_resume_matches_an_uninterrupted_run(tmp_path: Path, aug: str) -> None:
    data = write_images(tmp_path / "data")
    steps, snap_steps = 20, 8
    # r1_interval 4 and ada_interval 2 put the interruption inside both cycles; a fast ADA
    # (ada_kimg tiny, target 0) makes p move every adjustment.
    settings = {
        "kimg": steps * BATCH / 1000,
        "snap": snap_steps * BATCH / 1000,
        "aug": aug,
        "r1_interval": 4,
        "ada_interval": 2,
        "ada_kimg": 0.5,
        "ada_target": 0.0,
        "ema_kimg": 0.02,
    }
    reference = build(tiny_options(data, **settings))
    fit(reference, tmp_path / "reference")

    interrupted = build(tiny_options(data, **settings))
    with pytest.raises(RuntimeError, match="simulated"):
        fit(interrupted, tmp_path / "resumed", callbacks=[Interrupt(snap_steps + 3)])
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = build(tiny_options(data, **settings), init_seed=1)
    fit(resumed, tmp_path / "resumed", ckpt_path=last)

    assert resumed.cur_nimg == reference.cur_nimg == steps * BATCH
    assert resumed.iteration == reference.iteration == steps
    if aug == "ada":
        assert float(reference.augment_pipe.p) > 0
        assert float(resumed.augment_pipe.p) == float(reference.augment_pipe.p)
    for name in ("G_ema", "G", "D"):
        ours, theirs = getattr(resumed, name).state_dict(), getattr(reference, name).state_dict()
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=f"{name}.{key}")


def test_init_from_our_checkpoint_starts_from_its_weights(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data")
    source = StyleGAN3Training(tiny_options(data))
    with torch.no_grad():
        for param in source.G_ema.parameters():
            param.add_(0.5)
    path = source.export(tmp_path / "network.pt", "test")

    module = StyleGAN3Training(tiny_options(data, init_from=str(path)))
    for name in ("G", "G_ema", "D"):
        for key, value in getattr(source, name).state_dict().items():
            assert torch.equal(getattr(module, name).state_dict()[key], value), f"{name}.{key}"


def test_init_from_a_different_architecture_names_the_mismatch(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data")
    path = StyleGAN3Training(tiny_options(data)).export(tmp_path / "network.pt", "test")
    wider = tiny_options(data, init_from=str(path))
    wider.G_kwargs = {**wider.G_kwargs, "channel_max": 16}
    with pytest.raises(UserError, match=r"channel_max is 32 in the checkpoint but 16"):
        StyleGAN3Training(wider)
    # Same kwargs but other shapes (a hand-edited file) fail on the strict key/shape check.
    broken = copy.deepcopy(torch.load(path, weights_only=True))
    broken["D"]["state_dict"].pop("b16.conv0.weight")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match=r"b16\.conv0\.weight"):
        StyleGAN3Training(tiny_options(data, init_from=str(tmp_path / "broken.pt")))


def test_fixed_seed_grid_is_stable(tmp_path: Path) -> None:
    module = StyleGAN3Training(tiny_options(write_images(tmp_path / "data")))
    first, second = module.sample_grid(), module.sample_grid()
    assert first.shape == (4, 3, RESOLUTION, RESOLUTION) and torch.equal(first, second)
    assert math.isfinite(float(first.abs().sum()))


def test_init_from_an_official_pickle_starts_from_its_weights(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    data = write_images(tmp_path / "data")
    options = tiny_options(data)
    torch.manual_seed(5)
    g, g_ema, d = (
        build_network(k, c)
        for k, c in [("G", options.G_kwargs), ("G", options.G_kwargs), ("D", options.D_kwargs)]
    )
    with torch.no_grad():
        for param in g_ema.parameters():
            param.mul_(0.5)
    networks = {"G": (g, options.G_kwargs), "G_ema": (g_ema, options.G_kwargs)}
    networks["D"] = (d, options.D_kwargs)
    path = write_pickle(tmp_path / "official.pkl", official_snapshot(official_stubs, networks))
    official_stubs.remove()

    module = build(tiny_options(data, init_from=str(path)), init_seed=9)
    for name, source in (("G", g), ("G_ema", g_ema), ("D", d)):
        for key, value in source.state_dict().items():
            assert torch.equal(getattr(module, name).state_dict()[key], value), f"{name}.{key}"
    # Training goes on from there: one step moves G away from the pickle's weights.
    fit(module, tmp_path / "run")
    assert module.cur_nimg == options.kimg * 1000
    assert not torch.equal(module.G.synthesis.input.weight, g.synthesis.input.weight)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:metrics. no Inception weights")
def test_snapshots_measure_fid_and_keep_the_best_checkpoint(tmp_path: Path) -> None:
    data = write_images(tmp_path / "data")
    options = tiny_options(
        data, kimg=3 * BATCH / 1000, snap=BATCH / 1000, metrics=["fid", "kid"], metrics_num=8
    )
    module = build(options)
    fit(module, tmp_path / "run")

    assert set(module.last_metrics) >= {"fid", "kid"}
    assert math.isfinite(module.best_fid) and module.best_fid <= module.last_metrics["fid"]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["stylegan3"]["metrics"]["fid"] == module.best_fid
    assert list((tmp_path / "run" / "cache").glob("real-*.pt")), "real statistics not cached"


def test_fp16_layers_follow_num_fp16_res(tmp_path: Path) -> None:
    module = build(tiny_options(write_images(tmp_path / "data")))
    synthesis = module.G.synthesis
    # num_fp16_res 4 at 16 px: every layer sampled above 16 / 2**4 = 1 px, in G and G_ema.
    assert len(fp16_layers(module.G)) == len(fp16_layers(module.G_ema)) == 4
    assert len(synthesis.layer_names) == 4
    assert fp16_layers(module.D) == [module.D.b16, module.D.b8]
    fp32 = build(
        tiny_options(
            write_images(tmp_path / "data"),
            G_kwargs={**module.G_config, "num_fp16_res": 0},
            D_kwargs={**module.D_config, "num_fp16_res": 0},
        )
    )
    assert fp16_layers(fp32.G) == fp16_layers(fp32.D) == []


@pytest.mark.cuda
def test_one_cuda_step_with_fp16_layers(tmp_path: Path) -> None:
    module = build(tiny_options(write_images(tmp_path / "data"), kimg=BATCH / 1000))
    fit(module, tmp_path / "run", accelerator="cuda")
    assert fp16_layers(module.G) and module.cur_nimg == BATCH
    assert all(torch.isfinite(p).all() for p in module.G_ema.parameters())


def test_resuming_a_finished_run_trains_no_further(tmp_path: Path) -> None:
    options = tiny_options(write_images(tmp_path / "data"), kimg=BATCH / 1000)
    finished = build(options)
    fit(finished, tmp_path / "run")
    again = build(options, init_seed=1)
    fit(again, tmp_path / "run", ckpt_path=tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert again.cur_nimg == BATCH and again.iteration == 1
    for key, value in finished.G.state_dict().items():
        assert torch.equal(again.G.state_dict()[key], value), key


@pytest.mark.parametrize("architecture", ["stylegan3-t", "stylegan3-r"])
def test_stage_defaults_from_scratch_and_when_fine_tuning(architecture: str) -> None:
    from src.stylegan3.__main__ import training_options
    from tests.test_configs import compose_stage

    def options(*overrides: str) -> object:
        cfg = compose_stage("stylegan3", [f"stylegan3.cfg={architecture}", *overrides])
        return training_options(cfg.stylegan3, seed=0)

    scratch = options("stylegan3.data=/d", "stylegan3.resolution=256", "stylegan3.batch=32")
    assert scratch.ema_kimg == 10 and scratch.ema_rampup == 0.05 and scratch.ada_kimg == 500
    assert scratch.gamma == 2 and scratch.blur_fade_kimg == 200
    assert scratch.blur_sigma == (10.0 if architecture == "stylegan3-r" else 0.0)
    tuned = options("stylegan3.data=/d", "stylegan3.batch=16", "stylegan3.init_from=/g.pkl")
    assert tuned.init_from == "/g.pkl" and tuned.ema_kimg == 5
    assert tuned.ema_rampup is None and tuned.ada_kimg == 100 and tuned.blur_sigma == 0.0
