"""One torch thread for the CycleGAN tests, and a tiny trained stage shared by several tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.common.stage import CONFIG_DIR, execute_stage
from src.common.toyfaces.writer import write_toyfaces

TINY_STAGE = (
    "cyclegan.data.load_size=36",
    "cyclegan.data.crop_size=32",
    "cyclegan.data.num_workers=0",
    "cyclegan.generator.netG=resnet_1blocks",
    "cyclegan.generator.ngf=4",
    "cyclegan.discriminator.ndf=4",
    "cyclegan.n_epochs=1",
    "cyclegan.n_epochs_decay=1",
    "cyclegan.pool_size=4",
    "cyclegan.grid_samples=2",
    "cyclegan.export_reference=true",
    "+cyclegan.trainer.enable_model_summary=false",
    "+cyclegan.trainer.log_every_n_steps=1",
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from threads, and on a busy machine idle threads spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_stage_in_process(root: Path, *extra: str) -> Path:
    """Run the cyclegan stage in this process (as run_stage would); returns its out_dir."""
    from src.cyclegan.__main__ import train

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("cyclegan", [f"paths.root_dir={root}", *TINY_STAGE, *extra])
    execute_stage("cyclegan", train, cfg)
    return Path(cfg.out_dir)


@pytest.fixture(scope="module")
def trained_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The out_dir of a tiny cyclegan run on 6 + 6 toy faces (2 epochs)."""
    root = tmp_path_factory.mktemp("cyclegan")
    toy = root / "toy"
    write_toyfaces(
        toy,
        seed=0,
        size=32,
        train_count=6,
        test_count=2,
        paired_count=0,
        bad_fraction=0.0,
        contact_sheet_pairs=0,
        progress=False,
    )
    torch.set_num_threads(1)
    return run_stage_in_process(root, f"cyclegan.data.root={toy}")
