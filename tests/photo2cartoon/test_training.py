"""One Lightning training step of each model at 64 px, the lr schedule and the sample grid."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.photo2cartoon.training import (
    Photo2CartoonTraining,
    heatmap_overlay,
    release_lr_factor,
)
from tests.pix2pix.test_training import LrRecorder

SIZE = 64


class RandomUnpaired(Dataset):
    """A few random A and B images in [-1, 1], shaped like UnpairedImageDataset's items."""

    def __init__(self, count: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 2, 3, SIZE, SIZE, generator=generator) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"A": self.images[index, 0], "B": self.images[index, 1]}


class RandomData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train_set = RandomUnpaired()
        self.val_set = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=1)


def _module(kind: str, png_dir: Path | None = None, **kwargs: object) -> Photo2CartoonTraining:
    return Photo2CartoonTraining(
        generator={"kind": kind, "ngf": 4, "img_size": SIZE, "light": True, "n_res": 1},
        ndf=4,
        global_layers=6,
        local_layers=5,
        weights={"faceid": 0.0},
        png_dir=str(png_dir) if png_dir else None,
        **kwargs,
    )


def _fit(
    module: Photo2CartoonTraining, iterations: int, callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=callbacks,
        max_steps=2 * iterations,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=RandomData())
    return trainer


@pytest.mark.parametrize("kind", ["ugatit", "photo2cartoon"])
def test_one_training_step_updates_all_networks_and_keeps_blends_clipped(
    kind: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = _module(kind, tmp_path, lr=0.5, iterations=10, sample_every=1, sample_count=2)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = _fit(module, iterations=1)
    assert module.iteration == 1 and trainer.global_step == 2
    after = module.state_dict()
    for network in ("gen_a2b", "gen_b2a", "dis_ga", "dis_gb", "dis_la", "dis_lb"):
        changed = [
            k for k in before if k.startswith(network) and not torch.equal(before[k], after[k])
        ]
        assert changed, f"{network} did not change"
    # lr 0.5 pushes the blends far outside [0, 1]; the clippers bring them back.
    for name, value in after.items():
        if name.endswith(("rho", "w_gamma", "w_beta")):
            assert value.min() >= 0 and value.max() <= 1, name
    assert torch.isfinite(torch.stack([v.float().sum() for v in after.values()])).all()
    grid = sorted(tmp_path.glob("translations_*.png"))
    assert [p.name for p in grid] == ["translations_000001.png"]


def reference_lrs(lr: float, iterations: int) -> list[float]:
    """The lr each step runs at in the releases (UGATIT.py, UGATIT_sadalin_hourglass.py): steps
    count from 1; at the start of every step past ``iterations // 2`` the lr is lowered by
    ``lr / (iterations // 2)``, in place."""
    current, seen = lr, []
    for step in range(1, iterations + 1):
        if step > iterations // 2:
            current -= lr / (iterations // 2)
        seen.append(current)
    return seen


@pytest.mark.parametrize("iterations", [10, 1_000_000])
def test_lr_factor_is_the_releases_step_by_step(iterations: int) -> None:
    factor = release_lr_factor(iterations)
    reference = reference_lrs(1.0, iterations)
    half = iterations // 2
    # First step, last flat step, first decayed step, middle of the decay, last step.
    for done in (0, half - 1, half, half + half // 2, iterations - 1):
        assert factor(done) == pytest.approx(reference[done], abs=1e-9), done
    assert factor(half) < 1 and factor(iterations - 1) == 0
    assert release_lr_factor(iterations, decay=False)(iterations - 1) == 1.0


def test_odd_iteration_counts_stop_at_zero() -> None:
    # The releases' last step would run at -lr / half; ours stops at 0.
    assert reference_lrs(1.0, 5)[-1] < 0
    assert [release_lr_factor(5)(i) for i in range(5)] == pytest.approx([1, 1, 0.5, 0, 0])


def test_schedulers_follow_the_releases_in_training() -> None:
    torch.manual_seed(0)
    module = _module("ugatit", lr=1e-3, iterations=4, sample_every=0)
    recorder = LrRecorder()
    trainer = _fit(module, iterations=4, callbacks=[recorder])
    assert trainer.global_step == 8
    expected = reference_lrs(1e-3, 4)
    assert expected == pytest.approx([1e-3, 1e-3, 0.5e-3, 0.0])
    assert [g for g, _ in recorder.seen] == pytest.approx(expected)
    assert [d for _, d in recorder.seen] == pytest.approx(expected)


def test_resumed_schedule_follows_the_new_iterations() -> None:
    short = _module("ugatit", lr=1e-3, iterations=4, sample_every=0)
    _fit(short, iterations=3)
    saved = [s.state_dict() for s in short.lr_schedulers()]
    longer = _module("ugatit", lr=1e-3, iterations=100, sample_every=0)
    _, schedulers = longer.configure_optimizers()
    for entry, state in zip(schedulers, saved, strict=True):
        entry["scheduler"].load_state_dict(state)
        # Step 3 of 100 is still in the flat first half, whatever the checkpoint's run planned.
        assert entry["scheduler"].lr_lambdas[0](3) == 1.0


def test_heatmap_overlay_keeps_images_in_range() -> None:
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    heatmap = torch.randn(2, 1, 8, 8) * 100
    overlay = heatmap_overlay(images, heatmap)
    assert overlay.shape == images.shape
    assert overlay.min() >= -1 and overlay.max() <= 1
