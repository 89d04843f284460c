"""Encoder training resumes exactly: N steps straight equal N/2 steps, Lightning's checkpoint,
and N/2 more (encoder, latent discriminator, both optimizers, the progressive stage, the data
order); and the stage trains under two-process CPU DDP (find-unused-parameters: the encoder's
and the discriminator's steps each leave the other's weights without gradients)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from src.common.images import save_image
from src.encoder.checkpoints import load_encoder
from src.encoder.module import EncoderTraining
from src.encoder.networks import build_encoder
from src.stylegan3.generate import to_pil
from src.stylegan3.legacy import load_networks
from src.stylegan3.networks import Generator
from tests.conftest import run_module
from tests.stylegan3.tiny import G_KWARGS, write_tiny_checkpoint

STEPS = 6
# Progressive training moves through stages 0, 1 and 2 within the 6 steps (stage 1 from step 2).
PROGRESSIVE = {"progressive_start": 2, "progressive_step_every": 2}


class RecordBatches(L.Callback):
    """Per training step: the first pixel of every face of the batch (the data order) and the
    progressive stage the step trained."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[float], int | None]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen.append((batch[:, 0, 0, 0].tolist(), module.encoder.progressive_stage))


def tiny_module(faces: list[torch.Tensor]) -> EncoderTraining:
    """A tiny e4e (discriminator on) against a tiny frozen generator; weights from seed 0."""
    torch.manual_seed(0)
    generator = Generator(**G_KWARGS)
    encoder = build_encoder(
        {
            "kind": "e4e",
            "n_styles": generator.num_ws,
            "w_dim": generator.w_dim,
            "input_size": 32,
            "widths": (8, 8, 16, 16),
            "units": (1, 1, 1, 1),
            "se_reduction": 4,
        }
    )
    return EncoderTraining(
        encoder,
        generator,
        lr=1e-3,
        d_lr=1e-3,
        weights={"l2": 1.0, "delta_norm": 2e-4, "w_discriminator": 0.1, "r1": 10.0},
        train_set=faces,
        batch_size=3,
        seed=5,
        **PROGRESSIVE,
    )


def fit(module: EncoderTraining, steps: int, folder: Path, ckpt_path: Path | None = None):
    """Train to ``steps`` batches (two optimizer steps each), validating every 2 batches and
    writing ``last.ckpt`` every 3 batches as the stage's checkpoint callback does."""
    recorder = RecordBatches()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2 * steps,
        max_epochs=-1,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            recorder,
            ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=6),
        ],
    )
    held_out = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer.fit(module, val_dataloaders=DataLoader(held_out, batch_size=2), ckpt_path=ckpt_path)
    return trainer, recorder.seen


@pytest.fixture(scope="module")
def faces() -> list[torch.Tensor]:
    """Seven random 16 px faces (7 is not a multiple of the batch: passes straddle batches)."""
    return list(torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)


def test_resumed_training_equals_an_uninterrupted_run(faces, tmp_path: Path) -> None:
    straight = tiny_module(faces)
    straight_trainer, straight_batches = fit(straight, STEPS, tmp_path / "straight")

    first = tiny_module(faces)
    _, first_batches = fit(first, STEPS // 2, tmp_path / "resumed")
    last = tmp_path / "resumed" / "last.ckpt"
    assert torch.load(last, weights_only=False)["state_dict"]["steps_done"] == STEPS // 2
    # The resumed module starts from other weights: everything must come from the checkpoint.
    torch.manual_seed(1)
    resumed = tiny_module(faces)
    with torch.no_grad():
        for param in resumed.parameters():
            param.add_(torch.randn_like(param))
    resumed_trainer, resumed_batches = fit(resumed, STEPS, tmp_path / "resumed", last)

    assert first_batches + resumed_batches == straight_batches
    assert int(resumed.steps_done) == int(straight.steps_done) == STEPS
    assert [stage for _, stage in straight_batches] == [0, 0, 1, 1, 2, 2]
    for name in ("encoder", "discriminator"):
        ours, theirs = (getattr(m, name).state_dict() for m in (resumed, straight))
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=f"{name}.{key}")
    assert len(straight_trainer.optimizers) == len(resumed_trainer.optimizers) == 2
    for mine, reference in zip(
        resumed_trainer.optimizers, straight_trainer.optimizers, strict=True
    ):
        ours, theirs = mine.state_dict()["state"], reference.state_dict()["state"]
        assert ours.keys() == theirs.keys()
        for index, state in theirs.items():
            for key, value in state.items():
                torch.testing.assert_close(ours[index][key], value, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def stage_faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny generator and 12 of its pictures (8 to train on, 4 held out)."""
    root = tmp_path_factory.mktemp("encoder_ddp")
    generator_path = write_tiny_checkpoint(root / "G.pt", seed=0)
    generator = load_networks(generator_path)["G_ema"].eval()
    z = torch.randn(12, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pictures = to_pil(generator(z, None))
    for index, picture in enumerate(pictures):
        save_image(picture, root / ("val" if index >= 8 else "train") / f"{index:03d}.png")
    return {"root": root, "generator": generator_path}


@pytest.mark.slow
def test_two_process_cpu_ddp_stage_run_completes(stage_faces, tmp_path: Path) -> None:
    done = run_module(
        "src.encoder",
        f"encoder.data={stage_faces['root'] / 'train'}",
        f"encoder.val_data={stage_faces['root'] / 'val'}",
        f"encoder.generator={stage_faces['generator']}",
        f"paths.root_dir={tmp_path}",
        "encoder.backbone.widths=[8,8,16,16]",
        "encoder.backbone.units=[1,1,1,1]",
        "encoder.backbone.se_reduction=4",
        "encoder.input_size=32",
        "encoder.batch_size=2",
        "encoder.num_workers=0",
        "encoder.progressive_start=1",
        "encoder.progressive_step_every=1",
        "encoder.steps=4",
        "encoder.val_every=2",
        "encoder.val_count=4",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        # PyTorch's SyncBatchNorm (the IR-SE backbone's) runs on GPUs only.
        "trainer.sync_batchnorm=false",
        "+trainer.enable_progress_bar=false",
        "callbacks=minimal",
        "logger=csv",
        env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "runs" / "default" / "encoder"
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(state["state_dict"]["steps_done"]) == 4
    assert len(state["optimizer_states"]) == 2
    assert load_encoder(out / "encoder.pt").encoder.n_styles == 5
