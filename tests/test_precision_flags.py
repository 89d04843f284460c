"""Lightning's precision flag (``trainer.precision=bf16-mixed``) on the image-to-image stages and
the cleaner: a few steps on CPU in bfloat16 autocast train every network and keep float32
weights. (16-mixed is the same flag on GPUs; the StyleGAN stages run their own fp16 layers.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.cleaner.model import GoodBadClassifier
from src.cyclegan.model import CycleGANModule
from src.photo2cartoon.training import Photo2CartoonTraining
from src.pix2pix.model import Pix2PixModule

SIZE = 32


class RandomItems(Dataset):
    """``count`` items made by ``make(generator)`` from a fixed seed."""

    def __init__(self, make: Callable[[torch.Generator], dict[str, Any]], count: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        self.items = [make(generator) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def image(generator: torch.Generator, size: int = SIZE) -> torch.Tensor:
    return torch.rand(3, size, size, generator=generator) * 2 - 1


def unpaired(size: int = SIZE) -> RandomItems:
    return RandomItems(lambda g: {"A": image(g, size), "B": image(g, size)})


def pix2pix() -> tuple[L.LightningModule, RandomItems]:
    module = Pix2PixModule(
        {"netG": "unet_32", "ngf": 8, "norm": "instance"}, {"ndf": 8, "input_nc": 6}
    )
    return module, unpaired()


def cyclegan() -> tuple[L.LightningModule, RandomItems]:
    module = CycleGANModule(
        {"netG": "resnet_2blocks", "ngf": 4},
        {"netD": "basic", "input_nc": 3, "ndf": 4, "norm": "instance"},
        pool_size=2,
    )
    return module, unpaired()


def photo2cartoon() -> tuple[L.LightningModule, RandomItems]:
    module = Photo2CartoonTraining(
        generator={"kind": "photo2cartoon", "ngf": 4, "img_size": 64, "light": True, "n_res": 1},
        ndf=4,
        global_layers=6,
        local_layers=5,
        weights={"faceid": 0.0},
    )
    return module, RandomItems(lambda g: {"A": image(g, 64), "B": image(g, 64)}, count=2)


def cleaner() -> tuple[L.LightningModule, RandomItems]:
    module = GoodBadClassifier("test_resnet", backbone_kwargs={"drop_rate": 0})
    data = RandomItems(
        lambda g: {"image": image(g), "target": torch.randint(0, 2, [], generator=g).float()},
        count=8,
    )
    return module, data


def train(make: Callable, precision: str) -> tuple[L.LightningModule, set[str], L.Trainer]:
    """A few steps of ``make()``'s module; returns it, the parameters that moved and the
    trainer. Every Conv2d output dtype seen is kept in ``module.conv_dtypes``."""
    torch.manual_seed(0)
    module, data = make()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    module.conv_dtypes = set()
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda _m, _i, out: module.conv_dtypes.add(out.dtype))
    trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=2))
    moved = {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}
    return module, moved, trainer


@pytest.mark.parametrize(
    "make",
    [pix2pix, cyclegan, pytest.param(photo2cartoon, marks=pytest.mark.slow), cleaner],
    ids=lambda make: make.__name__,
)
def test_stage_module_trains_on_cpu_in_bf16_mixed(make: Callable) -> None:
    module, moved, trainer = train(make, "bf16-mixed")
    assert module.conv_dtypes == {torch.bfloat16}, "the convolutions did not run in bf16"
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert all(torch.isfinite(p).all() for p in module.parameters())
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if "loss" in k}
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    # The same parameters learn as in float32.
    reference, moved_fp32, _ = train(make, "32-true")
    assert reference.conv_dtypes == {torch.float32}
    assert moved == moved_fp32 and moved
