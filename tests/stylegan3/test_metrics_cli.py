"""``python -m src.stylegan3.metrics``: FID/KID of a checkpoint's G_ema, table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from src.common.errors import UserError
from src.stylegan3.legacy import load_networks
from src.stylegan3.metrics import generator_sampler, training_metrics
from tests.conftest import run_module
from tests.stylegan3.tiny import write_tiny_checkpoint


def write_reals(folder: Path, count: int = 12) -> Path:
    """Small RGB pictures of different sizes (the metrics crop and resize them)."""
    folder.mkdir(parents=True)
    noise = torch.Generator().manual_seed(0)
    for i in range(count):
        size = 20 + 4 * (i % 3)
        pixels = torch.randint(0, 256, (size, size + 2, 3), generator=noise, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.slow
def test_cli_prints_a_table_and_writes_json_and_the_real_cache(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt")
    data = write_reals(tmp_path / "reals")
    args = [
        f"ckpt={ckpt}",
        f"data={data}",
        "metrics=[fid,kid]",
        "num=10",
        "batch_size=4",
        "kid_subset_size=8",
        f"cache_dir={tmp_path / 'cache'}",
        f"out={tmp_path / 'result.json'}",
    ]
    done = run_module("src.stylegan3.metrics", *args, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "FID" in done.stdout and "stand-in, for relative" in done.stdout
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["extractor"] == "stand-in, for relative comparisons only"
    assert report["metrics"]["num_fake"] == 10 and report["metrics"]["num_real"] == 12
    assert report["metrics"]["fid"] > 0 and "kid" in report["metrics"]
    assert len(list((tmp_path / "cache").glob("real-*.pt"))) == 1


@pytest.mark.slow
def test_cli_missing_key_is_one_line(tmp_path: Path) -> None:
    done = run_module("src.stylegan3.metrics", f"data={tmp_path}")
    assert done.returncode != 0
    assert "ckpt is not set" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.filterwarnings("ignore:metrics. no Inception weights")
def test_training_metrics_measure_g_ema_at_the_training_resolution(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt")
    module = SimpleNamespace(G_ema=load_networks(ckpt)["G_ema"].eval(), device=torch.device("cpu"))
    options = SimpleNamespace(
        data=str(write_reals(tmp_path / "reals")),
        resolution=16,
        metrics=["fid", "kid"],
        metrics_num=8,
        metrics_kwargs={"batch_size": 4, "kid_subset_size": 4},
    )
    measure = training_metrics(options, tmp_path / "cache")
    first, second = measure(module), measure(module)
    assert set(first) == {"fid", "kid", "kid_std"} and first == second
    with pytest.raises(UserError, match="metrics_kwargs: unknown psi"):
        training_metrics(SimpleNamespace(**{**vars(options), "metrics_kwargs": {"psi": 1}}), ".")


def test_sampler_draws_the_same_latents_for_the_same_seed(tmp_path: Path) -> None:
    generator = load_networks(write_tiny_checkpoint(tmp_path / "tiny.pt"))["G_ema"].eval()
    with torch.no_grad():
        first = generator_sampler(generator, torch.device("cpu"), seed=3)(2)
        again = generator_sampler(generator, torch.device("cpu"), seed=3)(2)
    assert first.shape == (2, 3, 16, 16) and torch.equal(first, again)
