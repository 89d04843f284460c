"""pix2pix training: losses, schedule, one step, overfitting toy pairs, the stage itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from src.common.data import PairedImageDataset, PairTransform, pairs_from_folders
from src.common.generators import load_generator
from src.common.toyfaces.writer import write_toyfaces
from src.pix2pix.evaluate import evaluate_pairs
from src.pix2pix.model import (
    Pix2PixModule,
    gan_loss,
    linear_decay,
    step_schedulers_for_epoch,
)
from tests.conftest import run_module


@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy faces at 64 px: paired/A (photo) -> paired/B (cartoon), a true mapping."""
    root = tmp_path_factory.mktemp("toyfaces")
    write_toyfaces(
        root,
        seed=0,
        size=64,
        train_count=0,
        test_count=0,
        paired_count=16,
        bad_fraction=0.25,
        contact_sheet_pairs=0,
        progress=False,
    )
    return root


def tiny_module(**kwargs: object) -> Pix2PixModule:
    generator = {"netG": "unet_64", "ngf": 16, "norm": "instance"}
    return Pix2PixModule(generator, {"ndf": 16, "input_nc": 6}, **kwargs)


def quiet_trainer(batches: int) -> L.Trainer:
    """A trainer for ``batches`` batches (each batch is one D and one G optimizer step)."""
    return L.Trainer(
        max_steps=2 * batches,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def test_gan_losses() -> None:
    zeros = torch.zeros(2, 1, 3, 3)
    assert gan_loss(zeros, True, "vanilla", for_d=True).item() == pytest.approx(math.log(2))
    assert gan_loss(zeros, False, "lsgan", for_d=True).item() == 0
    assert gan_loss(zeros + 2, True, "lsgan", for_d=True).item() == pytest.approx(1)
    assert gan_loss(zeros + 2, False, "hinge", for_d=True).item() == pytest.approx(3)
    assert gan_loss(zeros + 2, True, "hinge", for_d=True).item() == 0
    assert gan_loss(zeros + 2, True, "hinge", for_d=False).item() == -2


def test_linear_schedule_constant_then_down_to_zero() -> None:
    factor = linear_decay(n_epochs=2, n_epochs_decay=3)
    assert [factor(e) for e in range(6)] == pytest.approx([1, 1, 0.75, 0.5, 0.25, 0])


def reference_epoch_lrs(lr: float, n_epochs: int, n_epochs_decay: int) -> list[float]:
    """The lr of each epoch in the reference: get_scheduler('linear') with epoch_count 1,
    ``update_learning_rate()`` (one scheduler step) at the start of every epoch."""

    def lambda_rule(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)

    return [lr * lambda_rule(steps) for steps in range(1, n_epochs + n_epochs_decay + 1)]


class MetricsRecorder(Logger):
    """A logger keeping every ``log_metrics`` call's values in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append(dict(metrics))

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        """Nothing to keep."""


class LrRecorder(L.Callback):
    """The generator's and the discriminator's lr at every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *_: object
    ) -> None:
        opt_g, opt_d = module.optimizers()
        self.seen.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]))


def test_lr_follows_the_reference_epoch_by_epoch(toy_pairs: Path) -> None:
    pairs = pairs_from_folders(toy_pairs / "paired")[:1]
    data = PairedImageDataset(pairs, PairTransform(32, 32, flip=False, train=False))
    generator = {"netG": "unet_32", "ngf": 4, "norm": "instance"}
    module = Pix2PixModule(
        generator, {"ndf": 4, "input_nc": 6}, lr=2e-4, n_epochs=3, n_epochs_decay=4
    )
    recorder = LrRecorder()
    logger = MetricsRecorder()
    trainer = L.Trainer(
        max_epochs=7,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[recorder, LearningRateMonitor(logging_interval="epoch")],
    )
    trainer.fit(module, DataLoader(data, batch_size=1))
    expected = reference_epoch_lrs(2e-4, 3, 4)
    # First epochs at lr, the decay starts in epoch 3 (1-based) and the last epoch runs at 0.
    assert expected[0] == expected[1] == 2e-4 and expected[2] < 2e-4 and expected[-1] == 0
    assert [g for g, _ in recorder.seen] == pytest.approx(expected)
    assert [d for _, d in recorder.seen] == pytest.approx(expected)
    # The monitor logs each epoch's lr under the scheme's names, the lr that epoch ran at.
    for name in ("train/lr_G", "train/lr_D"):
        assert [m[name] for m in logger.rows if name in m] == pytest.approx(expected)


def test_a_restarted_epoch_keeps_its_lr() -> None:
    # Lightning restarts an interrupted epoch on resume: its lr must not move a second step.
    module = tiny_module(n_epochs=1, n_epochs_decay=3)
    optimizers, configs = module.configure_optimizers()
    module.lr_schedulers = lambda: [config["scheduler"] for config in configs]
    for _ in range(2):
        step_schedulers_for_epoch(module)
        assert [o.param_groups[0]["lr"] for o in optimizers] == pytest.approx([1.5e-4] * 2)


def test_one_training_step_updates_d_then_g(toy_pairs: Path) -> None:
    torch.manual_seed(0)
    pairs = pairs_from_folders(toy_pairs / "paired")[:2]
    data = PairedImageDataset(pairs, PairTransform(72, 64))
    module = tiny_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = quiet_trainer(1)
    trainer.fit(module, DataLoader(data, batch_size=2))
    after = module.state_dict()
    for net in ("generator.down.0.conv.weight", "discriminator.model.0.weight"):
        assert not torch.equal(before[net], after[net]), net
    losses = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"train/loss_G", "train/loss_D", "train/loss_G_gan", "train/loss_G_l1"} <= losses.keys()
    assert all(math.isfinite(v) for v in losses.values())
    # D saw the real pair and the detached fake pair: at init its loss is near log 2.
    assert 0.3 < losses["train/loss_D"] < 1.2
    total = losses["train/loss_G_gan"] + module.hparams.lambda_l1 * losses["train/loss_G_l1"]
    assert losses["train/loss_G"] == pytest.approx(total, rel=1e-5)


@pytest.mark.slow
def test_overfitting_eight_toy_pairs_halves_l1(toy_pairs: Path) -> None:
    L.seed_everything(0)
    pairs = pairs_from_folders(toy_pairs / "paired")[:8]
    data = PairedImageDataset(pairs, PairTransform(64, 64, flip=False, train=False))
    module = tiny_module(lr=1e-3)
    before = evaluate_pairs(module.generator, pairs, 64)["l1"]
    quiet_trainer(30).fit(module, DataLoader(data, batch_size=8, shuffle=True))
    after = evaluate_pairs(module.generator, pairs, 64)["l1"]
    assert after < 0.5 * before, (before, after)


def write_filtered_manifest(run_dir: Path, toy_root: Path) -> None:
    """What cleaner_filter writes: every pair with a score and a kept flag, paths relative."""
    rows = []
    for index, (a, b) in enumerate(pairs_from_folders(toy_root / "paired")):
        rows.append(
            {
                "seed": index,
                "a": f"../toyfaces/paired/A/{a.name}",
                "b": f"../toyfaces/paired/B/{b.name}",
                "score": 0.1 * (index % 10),
                "kept": index % 4 != 3,
            }
        )
    folder = run_dir / "cleaner_filter"
    folder.mkdir(parents=True)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / "manifest.filtered.jsonl").write_text(lines, encoding="utf-8")


@pytest.mark.slow
def test_smoke_stage_trains_on_the_filtered_manifest(toy_pairs: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "smoke"
    (run_dir / "toyfaces").mkdir(parents=True)
    (run_dir / "toyfaces" / "paired").symlink_to(toy_pairs / "paired")
    write_filtered_manifest(run_dir, toy_pairs)
    result = run_module(
        "src.pix2pix",
        "+experiment=smoke",
        f"paths.root_dir={tmp_path}",
        "pix2pix.n_epochs=1",
        "pix2pix.n_epochs_decay=1",
        "callbacks=minimal",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = run_dir / "pix2pix"
    bundle = load_generator(out / "generator.pt")
    assert (bundle.family, bundle.image_size) == ("pix2pix", 32)
    assert bundle.module(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert (out / "val_grid.png").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["pairs"] == 12 and 0 < truth["l1"] < 2
    assert "ground-truth pairs" in result.stdout
    val = bundle.meta["val"]
    assert {"val/l1", "metrics/psnr", "metrics/ssim"} <= set(val) and val["metrics/psnr"] > 0

    # The Lightning checkpoint exports to the same generator (TorchScript, through the CLI).
    exported = run_module(
        "src.pix2pix.export",
        f"ckpt={out / 'checkpoints' / 'last.ckpt'}",
        "format=torchscript",
        f"out={tmp_path / 'g.ts'}",
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        scripted = torch.jit.load(str(tmp_path / "g.ts"))
        assert torch.allclose(scripted(images), bundle.module(images), atol=1e-5)
