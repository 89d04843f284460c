"""The shared trainer, logger and callbacks groups build a Trainer that logs, checkpoints and
resumes exactly."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from src.common.errors import UserError
from src.common.lifecycle import GUARD
from src.common.stage import CONFIG_DIR, StageContext
from src.common.training import (
    CheckpointOnSigterm,
    checkpoint_problem,
    last_checkpoint,
    log_lightning_once,
    make_trainer,
    resume_checkpoint,
)


class TinyRegression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def stage_cfg(tmp_path: Path, epochs: int, *extra: str, callbacks: str = "minimal"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "toyfaces",
            [
                f"paths.root_dir={tmp_path}",
                f"+toyfaces.trainer.max_epochs={epochs}",
                "+toyfaces.trainer.enable_model_summary=false",
                f"callbacks={callbacks}",
                *extra,
            ],
        )
    return cfg


@pytest.mark.slow
def test_trainer_logs_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    straight = TinyRegression()
    make_trainer(stage_cfg(tmp_path / "a", 4)).fit(straight, loader())

    torch.manual_seed(0)
    first = TinyRegression()
    cfg = stage_cfg(tmp_path / "b", 2)
    trainer = make_trainer(cfg)
    trainer.fit(first, loader())
    assert trainer.max_epochs == 2
    ckpt = last_checkpoint(cfg.out_dir)
    assert ckpt is not None
    assert list(Path(cfg.paths.log_dir, "toyfaces").rglob("events.out.tfevents.*"))

    resumed = TinyRegression()
    trainer = make_trainer(stage_cfg(tmp_path / "b", 4))
    trainer.fit(resumed, loader(), ckpt_path=ckpt)
    assert trainer.global_step == 16
    assert torch.allclose(resumed.layer.weight, straight.layer.weight)


def test_csv_logger_and_minimal_callbacks(tmp_path: Path) -> None:
    trainer = make_trainer(stage_cfg(tmp_path, 1, "logger=csv", callbacks="default"))
    assert type(trainer.logger).__name__ == "CSVLogger"
    names = {type(c).__name__ for c in trainer.callbacks}
    # Under pytest stdout is not a terminal: the progress bar prints plain lines.
    assert {"PlainProgressBar", "LearningRateMonitor", "ModelCheckpoint"} <= names
    minimal = make_trainer(stage_cfg(tmp_path, 1))
    assert "LearningRateMonitor" not in {type(c).__name__ for c in minimal.callbacks}
    # Without a logger the monitor would refuse to start: it is left out.
    silent = make_trainer(stage_cfg(tmp_path, 1, "logger=none", callbacks="default"))
    assert silent.logger is None
    assert "LearningRateMonitor" not in {type(c).__name__ for c in silent.callbacks}


def test_a_truncated_last_ckpt_falls_back_to_the_newest_intact_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for index, name in enumerate(("epoch0000.ckpt", "epoch0001.ckpt", "last.ckpt")):
        torch.save({"epoch": index}, folder / name)
        os.utime(folder / name, (1000 + index, 1000 + index))
    intact = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(intact[: len(intact) // 2])
    assert checkpoint_problem(folder / "epoch0001.ckpt") is None
    assert "truncated or not a checkpoint" in checkpoint_problem(folder / "last.ckpt")

    assert last_checkpoint(tmp_path, "pix2pix") == folder / "epoch0001.ckpt"
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"pix2pix: {folder / 'last.ckpt'} is broken: truncated or not")
    assert message.endswith("; resuming from epoch0001.ckpt instead")

    ctx = StageContext(
        "pix2pix", OmegaConf.create({"pix2pix": {"ckpt_path": "last"}}), tmp_path, "h", resume=False
    )
    assert resume_checkpoint(ctx) == folder / "epoch0001.ckpt"
    for name in ("epoch0000.ckpt", "epoch0001.ckpt"):
        (folder / name).write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UserError, match=r"ckpt_path=last: .* broken, with no intact checkpoint"):
        resume_checkpoint(ctx)
    ctx.params.ckpt_path = None
    ctx.resume = True
    assert resume_checkpoint(ctx) is None
    assert capsys.readouterr().err.strip().endswith("; none intact beside it")
    ctx.params.ckpt_path = str(folder / "last.ckpt")
    with pytest.raises(UserError, match=r"last\.ckpt is truncated or not a checkpoint"):
        resume_checkpoint(ctx)


def test_make_trainer_saves_a_checkpoint_on_sigterm(tmp_path: Path) -> None:
    trainer = make_trainer(stage_cfg(tmp_path, 1))
    (saver,) = [c for c in trainer.callbacks if isinstance(c, CheckpointOnSigterm)]
    assert saver.checkpoint_dir == Path(stage_cfg(tmp_path, 1).out_dir) / "checkpoints"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR2"])
def test_a_stop_signal_mid_fit_saves_last_ckpt_after_that_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signame: str
) -> None:
    """SIGTERM, or submitit's USR2 inside a SLURM job: training stops at the end of the batch
    and ``last.ckpt`` holds that step (epochs here are 4 steps: not the epoch checkpoint)."""
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    cfg = stage_cfg(tmp_path, 50)

    class Stopped(TinyRegression):
        def training_step(self, batch, batch_idx):
            if self.global_step == 5:
                os.kill(os.getpid(), getattr(signal, signame))
            return super().training_step(batch, batch_idx)

    GUARD.install()
    try:
        with pytest.raises(SystemExit):
            make_trainer(cfg).fit(Stopped(), loader())
        assert GUARD.received
    finally:
        GUARD.uninstall()
    saved = torch.load(
        Path(cfg.out_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert saved["global_step"] == 6


def test_lightning_lines_are_printed_once_under_a_configured_root_logger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hydra configures the root logger before a stage imports Lightning: one handler prints."""
    root, package = logging.getLogger(), logging.getLogger("lightning")
    own = logging.StreamHandler()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(package, "handlers", [own])
    log_lightning_once()
    assert package.handlers == [own], "nothing else prints Lightning's lines: keep its handler"

    monkeypatch.setattr(root, "handlers", [logging.StreamHandler()])
    log_lightning_once()
    assert package.handlers == []
    assert logging.getLogger("lightning.pytorch.utilities.rank_zero").hasHandlers()
