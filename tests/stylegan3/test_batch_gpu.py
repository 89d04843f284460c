"""batch_gpu: a device's batch in several passes with gradient accumulation gives the gradients
of one pass over the whole batch; the defaults and checks of the reference's train.py."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from src.common.errors import UserError
from src.stylegan3.training import discriminator_kwargs
from tests.stylegan3.training_helpers import BATCH, TINY_D, build, fit, tiny_options, write_images


class RecordGradients(L.Callback):
    """Every optimiser step's gradients (G step, D step, R1 step), in order."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_pre_hook(self._record)

    def _record(self, optimizer: torch.optim.Optimizer, *_: object) -> None:
        self.steps.append(
            [
                torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                for group in optimizer.param_groups
                for p in group["params"]
            ]
        )


def one_step_gradients(tmp_path: Path, batch_gpu: int | None) -> list[list[torch.Tensor]]:
    # Without the minibatch-stddev layer (its groups are per pass, as in the reference, where
    # they are per GPU) and with G's magnitude EMAs frozen (the reference updates them once per
    # pass), one step of 8 images must give the same gradients however it is split.
    options = tiny_options(
        write_images(tmp_path / "data", count=8),
        kimg=8 / 1000,
        batch=8,
        batch_gpu=batch_gpu,
        gamma=1.0,
        D_kwargs={
            **discriminator_kwargs(16, 0, 2, dict(TINY_D)),
            "epilogue_kwargs": {"mbstd_group_size": 2, "mbstd_num_channels": 0},
        },
    )
    options.G_kwargs["magnitude_ema_beta"] = 1.0
    recorder = RecordGradients()
    module = build(options)
    fit(module, tmp_path / f"run{batch_gpu}", callbacks=[recorder])
    assert module.cur_nimg == 8
    return recorder.steps


def test_batch_gpu_accumulates_the_gradients_of_one_big_batch(tmp_path: Path) -> None:
    whole = one_step_gradients(tmp_path, None)
    split = one_step_gradients(tmp_path, 2)
    assert len(whole) == len(split) == 3  # G, D and the lazy R1 step
    for phase, (big, passes) in enumerate(zip(whole, split, strict=True)):
        for index, (a, b) in enumerate(zip(big, passes, strict=True)):
            scale = max(float(a.abs().max()), 1e-12)
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale), (phase, index)
        assert any(float(g.abs().sum()) > 0 for g in big), phase


def test_batch_gpu_defaults_to_the_device_share(tmp_path: Path) -> None:
    module = build(tiny_options(write_images(tmp_path / "data")))
    assert module.options.batch_gpu is None and module.batch_gpu == BATCH
    split = build(tiny_options(write_images(tmp_path / "data"), batch_gpu=2))
    assert split.batch_gpu == 2


def test_batch_gpu_must_divide_the_batch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"batch_gpu: 3 must be positive and divide batch \(4\)"):
        tiny_options(write_images(tmp_path / "data"), batch_gpu=3)


def test_batch_gpu_below_the_mbstd_group_is_refused_before_training(tmp_path: Path) -> None:
    # As train.py: --batch-gpu cannot be smaller than --mbstd-group (here 2).
    module = build(tiny_options(write_images(tmp_path / "data"), batch_gpu=1))
    with pytest.raises(UserError, match=r"batch_gpu \(1\) cannot be smaller than mbstd_group"):
        fit(module, tmp_path / "run")
    assert module.cur_nimg == 0


def test_stage_options_carry_batch_gpu_and_fp32() -> None:
    from src.stylegan3.__main__ import training_options
    from tests.test_configs import compose_stage

    def options(*overrides: str) -> object:
        cfg = compose_stage("stylegan3", ["stylegan3.data=/d", *overrides])
        return training_options(cfg.stylegan3, seed=0)

    default = options()
    assert default.batch_gpu is None
    assert default.G_kwargs["num_fp16_res"] == default.D_kwargs["num_fp16_res"] == 4
    assert default.G_kwargs["conv_clamp"] == default.D_kwargs["conv_clamp"] == 256
    split = options("stylegan3.batch_gpu=16", "stylegan3.fp32=true")
    assert split.batch_gpu == 16
    for kwargs in (split.G_kwargs, split.D_kwargs):
        assert kwargs["num_fp16_res"] == 0 and kwargs["conv_clamp"] is None
