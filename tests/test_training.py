"""The shared trainer, logger and callbacks groups build a Trainer that logs, checkpoints and
resumes exactly."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from src.common.stage import CONFIG_DIR
from src.common.training import last_checkpoint, log_lightning_once, make_trainer


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
