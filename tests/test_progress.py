"""Progress: plain status lines when stdout is not a terminal (nohup, SLURM), and both bars
say where an iteration-based run is (``it 5/20``, ``kimg 0.8/1.6``), never ``Epoch N/-2``."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from src.common.progress import (
    PlainProgressBar,
    StageProgressBar,
    TrainingPosition,
    progress_for_output,
)


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


class KimgTiny(Tiny):
    """Counts kimg as StyleGAN3 does: 2 images an iteration, 0.02 kimg to train."""

    def progress_position(self) -> TrainingPosition:
        images = 2 * self.trainer.global_step
        return TrainingPosition(self.trainer.global_step, 10, f"kimg {images / 1000:.3f}/0.02")


def fit(tmp_path, module=None, callbacks=None, **limits) -> None:
    """Four batches per pass; a plain status line after every step unless ``callbacks``."""
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks or [PlainProgressBar(every_s=0, name="pix2pix")],
        **limits,
    )
    trainer.fit(module or Tiny(), data)


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
    assert any("it 5/6" in line for line in status)
    assert "it 6/6" in status[-1] and "eta 0:00:00" in status[-1]
    assert re.search(r" [0-9.e+-]+ it/s ", status[-1])
    assert not any("epoch" in line or "-2" in line for line in status)


def test_stylegan_stages_print_kimg(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path, module=KimgTiny(), max_epochs=-1, max_steps=10)
    status = [line for line in capsys.readouterr().out.splitlines() if "[pix2pix]" in line]
    assert any("kimg 0.010/0.02" in line for line in status)
    assert "kimg 0.020/0.02" in status[-1]
    assert "eta 0:00:00" in status[-1] and "step" not in status[-1]


class BarRecorder(L.Callback):
    """The train bar's tasks (description, completed, total) after every training batch."""

    def __init__(self, bar: StageProgressBar) -> None:
        self.bar = bar
        self.seen: list[list[tuple[str, float, float | None]]] = []

    def on_train_batch_end(self, trainer, module, *_) -> None:
        tasks = self.bar.progress.tasks
        self.seen.append([(t.description, t.completed, t.total) for t in tasks if t.visible])


@pytest.mark.parametrize(
    ("module", "expected"),
    [(Tiny(), "it {done}/20"), (KimgTiny(), "kimg {kimg:.3f}/0.02")],
)
def test_the_rich_bar_counts_iterations_of_the_total(tmp_path, module, expected) -> None:
    bar = StageProgressBar()
    recorder = BarRecorder(bar)
    total = 10 if isinstance(module, KimgTiny) else 20
    fit(tmp_path, module, [bar, recorder], max_steps=total, max_epochs=-1)
    # One bar across the 4-batch passes over the data, moved after every step.
    for done, tasks in enumerate(recorder.seen, start=1):
        label = expected.format(done=done, kimg=2 * done / 1000)
        assert tasks == [(label, done, total)]


def test_the_rich_bar_keeps_epochs_for_epoch_stages(tmp_path) -> None:
    bar = StageProgressBar()
    recorder = BarRecorder(bar)
    fit(tmp_path, Tiny(), [bar, recorder], max_epochs=2)
    assert recorder.seen[-1][0][0].startswith("Epoch 1/1") and recorder.seen[-1][0][1:] == (4, 4)


def test_the_rich_bar_is_kept_only_on_a_terminal() -> None:
    other = L.Callback()
    callbacks = [RichProgressBar(), other]
    assert progress_for_output(callbacks, "x", interactive=True) == callbacks
    plain = progress_for_output(callbacks, "x", interactive=False)
    assert isinstance(plain[0], PlainProgressBar) and plain[0].name == "x"
    assert plain[1] is other
