"""When stdout is not a terminal (nohup, SLURM), training prints plain status lines."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from src.common.progress import PlainProgressBar, progress_for_output


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss_G", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, **limits) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[PlainProgressBar(every_s=0, name="pix2pix")],
        **limits,
    )
    trainer.fit(Tiny(), data)


def test_epoch_stages_print_epochs_batches_and_metrics(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit(tmp_path, max_epochs=2)
    lines = capsys.readouterr().out.splitlines()
    status = [line for line in lines if line.startswith("[pix2pix]")]
    assert len(status) == 2 * 4 + 2, "a line per step (every_s=0) and one per epoch's end"
    last = status[-1]
    assert re.search(r"epoch 2/2 batch 4/4  step 8  [0-9.e+-]+ steps/s  loss_G [0-9.e+-]+$", last)


def test_iteration_stages_print_steps_of_the_total(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit(tmp_path, max_steps=6, max_epochs=-1)
    status = [line for line in capsys.readouterr().out.splitlines() if "[pix2pix]" in line]
    assert "step 6/6" in status[-1] and "eta 0:00:00" in status[-1]
    assert "epoch" not in status[-1] and "-2" not in status[-1]


def test_the_rich_bar_is_kept_only_on_a_terminal() -> None:
    other = L.Callback()
    callbacks = [RichProgressBar(), other]
    assert progress_for_output(callbacks, "x", interactive=True) == callbacks
    plain = progress_for_output(callbacks, "x", interactive=False)
    assert isinstance(plain[0], PlainProgressBar) and plain[0].name == "x"
    assert plain[1] is other
