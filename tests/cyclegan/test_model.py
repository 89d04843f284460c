"""The CycleGAN module: one training step for ResNet and U-Net generators, the lr schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.cyclegan.model import CycleGANModule
from tests.pix2pix.test_training import LrRecorder, reference_epoch_lrs

DISCRIMINATOR = {"netD": "basic", "input_nc": 3, "ndf": 4, "norm": "instance"}


def tiny_module(net_g: str, **kwargs) -> CycleGANModule:
    generator = {"netG": net_g, "ngf": 4}
    return CycleGANModule(generator, DISCRIMINATOR, pool_size=2, **kwargs)


class StepHarness:
    """Runs ``training_step`` outside a Trainer: real optimisers, backward as autograd's."""

    def __init__(self, module: CycleGANModule) -> None:
        self.module = module
        (self.opt_g, self.opt_d), _ = module.configure_optimizers()
        module.optimizers = lambda: (self.opt_g, self.opt_d)
        module.manual_backward = lambda loss: loss.backward()
        module.log_dict = lambda *args, **kwargs: None


@pytest.mark.parametrize("net_g", ["resnet_2blocks", "unet_32"])
def test_one_training_step_updates_all_four_networks(net_g: str) -> None:
    torch.manual_seed(0)
    module = tiny_module(net_g)
    StepHarness(module)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    batch = {"A": torch.rand(1, 3, 32, 32) * 2 - 1, "B": torch.rand(1, 3, 32, 32) * 2 - 1}
    module.training_step(batch, 0)
    for prefix in ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b"):
        changed = [
            not torch.equal(p, before[name])
            for name, p in module.named_parameters()
            if name.startswith(prefix)
        ]
        assert all(changed), prefix
    assert len(module.pool_a) == len(module.pool_b) == 1
    assert all(p.requires_grad for p in module.discriminator_a.parameters())


def test_generator_losses_weights_and_identity_switch() -> None:
    torch.manual_seed(0)
    module = tiny_module("resnet_1blocks")
    real_a, real_b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    losses, fake_b, _ = module.generator_losses(real_a, real_b)
    assert set(losses) == {"gan_ab", "gan_ba", "cycle_a", "cycle_b", "idt_ab", "idt_ba"}
    with torch.no_grad():
        cycle_a = torch.nn.functional.l1_loss(module.generator_ba(fake_b), real_a)
        idt = torch.nn.functional.l1_loss(module.generator_ab(real_b), real_b)
    assert float(losses["cycle_a"].detach()) == pytest.approx(10 * float(cycle_a))
    assert float(losses["idt_ab"].detach()) == pytest.approx(0.5 * 10 * float(idt))
    no_identity = tiny_module("resnet_1blocks", lambda_identity=0.0)
    assert "idt_ab" not in no_identity.generator_losses(real_a, real_b)[0]


class RandomUnaligned(Dataset):
    """One random (A, B) item in [-1, 1]."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {
            "A": torch.rand(3, 32, 32, generator=generator) * 2 - 1,
            "B": torch.zeros(3, 32, 32),
        }


def test_lr_follows_the_reference_epoch_by_epoch() -> None:
    module = tiny_module("resnet_1blocks", lr=2e-4, n_epochs=4, n_epochs_decay=3)
    recorder = LrRecorder()
    trainer = L.Trainer(
        max_epochs=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[recorder],
    )
    trainer.fit(module, DataLoader(RandomUnaligned(), batch_size=1))
    # The reference steps the scheduler at the start of each epoch: 1-based epoch k runs at
    # lr * (1 - max(0, k + 1 - n_epochs) / (n_epochs_decay + 1)), the last one at 0.
    expected = reference_epoch_lrs(2e-4, 4, 3)
    assert expected[:3] == pytest.approx([2e-4] * 3) and expected[-1] == 0
    assert [g for g, _ in recorder.seen] == pytest.approx(expected)
    assert [d for _, d in recorder.seen] == pytest.approx(expected)


def test_checkpoint_keeps_the_image_pools() -> None:
    module = tiny_module("resnet_1blocks")
    module.pool_a.query(torch.randn(2, 3, 8, 8))
    module.pool_b.query(torch.randn(1, 3, 8, 8))
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = tiny_module("resnet_1blocks")
    resumed.on_load_checkpoint(checkpoint)
    for before, after in ((module.pool_a, resumed.pool_a), (module.pool_b, resumed.pool_b)):
        assert len(after) == len(before)
        assert all(torch.equal(a, b) for a, b in zip(before.images, after.images, strict=True))
