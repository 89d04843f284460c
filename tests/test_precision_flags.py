"""Lightning's precision flag (``trainer.precision=bf16-mixed``) on the image-to-image stages, the
cleaner and the encoder: a few steps on CPU in bfloat16 autocast train every network and keep
float32 weights. (16-mixed is the same flag on GPUs; the StyleGAN stages run their own fp16
layers, and so does the encoder's frozen generator.)"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.cleaner.model import GoodBadClassifier
from src.common.images import save_image
from src.cyclegan.model import CycleGANModule
from src.encoder.module import EncoderTraining
from src.encoder.networks import build_encoder
from src.photo2cartoon.training import Photo2CartoonTraining
from src.pix2pix.model import Pix2PixModule
from src.stylegan3.generate import to_pil
from src.stylegan3.generator import SynthesisLayer
from src.stylegan3.networks import Generator
from tests.conftest import run_module
from tests.stylegan3.tiny import G_KWARGS, write_tiny_checkpoint

SIZE = 32


class RandomItems(Dataset):
    """``count`` items made by ``make(generator)`` from a fixed seed."""

    def __init__(self, make: Callable[[torch.Generator], Any], count: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        self.items = [make(generator) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
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


def encoder() -> tuple[L.LightningModule, RandomItems]:
    """e4e with its latent discriminator against a tiny StyleGAN3; the output dtype of every
    generator layer is kept in ``module.generator_dtypes``."""
    generator = Generator(**G_KWARGS)
    config = {"kind": "e4e", "n_styles": generator.num_ws, "w_dim": 16, "input_size": 32}
    network = build_encoder({**config, "widths": (8, 16, 16, 16), "units": (1, 1, 1, 1)})
    weights = {"l2": 1.0, "delta_norm": 2e-4, "w_discriminator": 0.1, "r1": 10.0}
    module = EncoderTraining(network, generator, weights=weights, progressive_start=None)
    module.generator_dtypes = set()
    for layer in generator.modules():
        if isinstance(layer, SynthesisLayer):
            layer.register_forward_hook(lambda _m, _i, out: module.generator_dtypes.add(out.dtype))
    return module, RandomItems(lambda g: image(g, G_KWARGS["img_resolution"]))


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
    [pix2pix, cyclegan, pytest.param(photo2cartoon, marks=pytest.mark.slow), cleaner, encoder],
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


def test_encoder_generator_keeps_its_own_precision_under_bf16() -> None:
    # The frozen StyleGAN renders in float32 on the CPU (its fp16 layers on CUDA), as the
    # StyleGAN stages run it, while the encoder computes in bfloat16.
    module, _, _ = train(encoder, "bf16-mixed")
    assert module.conv_dtypes == {torch.bfloat16}
    assert module.generator_dtypes == {torch.float32}


@pytest.mark.slow
def test_encoder_stage_runs_in_bf16_mixed(tmp_path: Path) -> None:
    from tests.encoder.test_stage import TINY

    generator = write_tiny_checkpoint(tmp_path / "G.pt")
    noise = torch.Generator().manual_seed(0)
    pictures = to_pil(torch.stack([image(noise, G_KWARGS["img_resolution"]) for _ in range(12)]))
    for index, picture in enumerate(pictures):
        save_image(picture, tmp_path / ("val" if index >= 8 else "train") / f"{index:03d}.png")
    result = run_module(
        "src.encoder",
        f"encoder.data={tmp_path / 'train'}",
        f"encoder.val_data={tmp_path / 'val'}",
        f"encoder.generator={generator}",
        f"paths.root_dir={tmp_path}",
        *TINY,
        "encoder.steps=2",
        "encoder.val_every=1",
        "trainer.precision=bf16-mixed",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bfloat16 Automatic Mixed Precision" in result.stdout + result.stderr
    out = tmp_path / "runs" / "default" / "encoder"
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(value) for value in metrics["encoder"].values()), metrics
    state = torch.load(out / "encoder.pt", weights_only=True)
    weights = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert weights and {v.dtype for v in weights} == {torch.float32}
