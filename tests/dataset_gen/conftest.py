"""Tiny base and blended generators for the dataset_gen tests, and running the stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.common.stage import CONFIG_DIR, execute_stage
from src.dataset_gen.__main__ import generate_pairs
from tests.stylegan3.tiny import write_tiny_checkpoint


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from threads, and on a busy machine idle threads spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def nets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny face generator and a perturbed copy of it standing in for the blend."""
    folder = tmp_path_factory.mktemp("nets")
    base = write_tiny_checkpoint(folder / "base.pt", seed=0)
    return base, write_tiny_checkpoint(folder / "blended.pt", seed=0, tune_seed=3)


def stage_overrides(root: Path, nets: tuple[Path, Path], *extra: str) -> list[str]:
    return [
        f"paths.root_dir={root}",
        f"dataset_gen.base={nets[0]}",
        f"dataset_gen.blended={nets[1]}",
        "logger=none",
        *extra,
    ]


def run_in_process(root: Path, nets: tuple[Path, Path], *extra: str) -> Path:
    """Run the stage in this process (as run_stage would) and return its out_dir."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("dataset_gen", stage_overrides(root, nets, *extra))
    execute_stage("dataset_gen", generate_pairs, cfg)
    return Path(cfg.out_dir)
