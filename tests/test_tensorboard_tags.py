"""Every training stage logs to TensorBoard under one tag scheme (src/common/tags.py).

Each stage runs in this process as its command would (its configs, callbacks and the
TensorBoard logger), tiny, on toy faces; the event files are read back and every scalar and
image tag is checked against the scheme written out below, independently of the helpers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.common.stage import CONFIG_DIR, execute_stage
from src.common.toyfaces.writer import write_toyfaces
from tests.cyclegan.conftest import TINY_STAGE as CYCLEGAN_TINY
from tests.photo2cartoon.test_stage import TINY as PHOTO2CARTOON_TINY
from tests.stylegan3.test_training_cli import tiny_overrides
from tests.stylegan3.tiny import write_tiny_checkpoint

NAME = r"[a-z0-9]+(_[a-z0-9]+)*"
PART = r"(_[A-Za-z0-9]+)*"
# train/ statistics may not look like losses or learning rates under another spelling.
STATISTIC = rf"(?!(loss|lr|g|d)(_|$)){NAME}"
EVALUATION = rf"val/{NAME}|metrics/{NAME}|epoch"  # epoch: Lightning's own, beside every log
GAN_SCALARS = re.compile(rf"^(train/(loss_[GD]{PART}|lr(_[GD])?|{STATISTIC})|{EVALUATION})$")
PLAIN_SCALARS = re.compile(
    rf"^(train/(loss(_(?![gd](_|$)){NAME})?|loss_D|lr|{STATISTIC})|{EVALUATION})$"
)
IMAGES = re.compile(r"^samples/[A-Za-z0-9]+(_[A-Za-z0-9]+)*$")


def logged_tags(log_dir: Path) -> tuple[set[str], set[str]]:
    """(scalar tags, image tags) of every event file under ``log_dir``."""
    scalars: set[str] = set()
    images: set[str] = set()
    folders = {path.parent for path in log_dir.rglob("events.out.tfevents.*")}
    assert folders, f"no event files under {log_dir}"
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()
        found = events.Tags()
        scalars |= set(found["scalars"])
        images |= set(found["images"])
    return scalars, images


def off_scheme(scalars: set[str], images: set[str], gan: bool) -> list[str]:
    pattern = GAN_SCALARS if gan else PLAIN_SCALARS
    return sorted(
        [tag for tag in scalars if not pattern.match(tag)]
        + [tag for tag in images if not IMAGES.match(tag)]
    )


@pytest.mark.parametrize(
    ("tag", "gan", "ok"),
    [
        ("train/loss_G", True, True),
        ("train/loss_G_cycle_a", True, True),
        ("train/loss_D_b", True, True),
        ("train/lr_G", True, True),
        ("train/r1_penalty", True, True),
        ("metrics/fid", True, True),
        ("train/loss_d", True, False),
        ("train/loss_g_l1", True, False),
        ("train/d_a", True, False),
        ("train/loss", True, False),
        ("loss/g_total", True, False),
        ("lr-Adam", True, False),
        ("lr", True, False),
        ("rho/mean", True, False),
        ("val_avg_latent/l2", False, False),
        ("train/loss_lpips", False, True),
        ("train/loss_D", False, True),
        ("train/loss_g_l1", False, False),
        ("train/loss_d", False, False),
        ("train/loss_G", False, False),
    ],
)
def test_the_scheme_check_itself(tag: str, gan: bool, ok: bool) -> None:
    assert (off_scheme({tag}, set(), gan) == []) == ok
    assert (off_scheme(set(), {"stylegan3/fakes", "samples/fakes"}, gan)) == ["stylegan3/fakes"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy faces at 32 px: unpaired train/test folders and labelled pairs."""
    root = tmp_path_factory.mktemp("tags") / "toy"
    write_toyfaces(
        root,
        seed=0,
        size=32,
        train_count=4,
        test_count=4,
        paired_count=16,
        bad_fraction=0.25,
        contact_sheet_pairs=0,
        progress=False,
    )
    return root


def run_in_process(stage: str, root: Path, *overrides: str, config: str | None = None) -> Path:
    """Run ``stage`` (its ``train``) with ``overrides`` under ``root``; its TensorBoard folder."""
    from importlib import import_module

    train = import_module(f"src.{stage}.__main__").train
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config or stage, [f"paths.root_dir={root}", "logger=tensorboard", *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        execute_stage(str(cfg.stage), train, cfg)
    finally:
        torch.set_num_threads(threads)
    return Path(cfg.paths.log_dir) / str(cfg.stage)


def stylegan3_overrides(stage: str, root: Path, data: Path) -> list[str]:
    return [
        o
        for o in tiny_overrides(stage, root, data, 0.016, f"{stage}.metrics=[fid,kid]")
        if o not in ("callbacks=minimal", f"paths.root_dir={root}")
    ] + [f"{stage}.metrics_num=8"]


STAGES = {
    "pix2pix": lambda toy: [
        f"pix2pix.data.root={toy / 'paired'}",
        "pix2pix.data.load_size=36",
        "pix2pix.data.crop_size=32",
        "pix2pix.data.batch_size=4",
        "pix2pix.data.num_workers=0",
        "pix2pix.generator.netG=unet_32",
        "pix2pix.generator.ngf=4",
        "pix2pix.discriminator.ndf=4",
        "pix2pix.n_epochs=1",
        "pix2pix.n_epochs_decay=1",
        "+pix2pix.trainer.log_every_n_steps=1",
    ],
    "cyclegan": lambda toy: [
        f"cyclegan.data.root={toy}",
        *CYCLEGAN_TINY,
    ],
    "photo2cartoon": lambda toy: [
        f"photo2cartoon.data.root={toy}",
        *PHOTO2CARTOON_TINY,
        "photo2cartoon.metrics=[fid,kid]",
        "photo2cartoon.metrics_every=3",
        "photo2cartoon.trainer.log_every_n_steps=1",
    ],
    "cleaner": lambda toy: [
        f"cleaner.pairs={toy / 'paired'}",
        "cleaner.backbone.name=test_resnet",
        "cleaner.image_size=32",
        "cleaner.batch_size=8",
        "cleaner.num_workers=0",
        "cleaner.trainer.max_epochs=2",
        "+cleaner.trainer.log_every_n_steps=1",
    ],
}
GAN = {"pix2pix", "cyclegan", "photo2cartoon", "stylegan3_photo", "stylegan3"}


def check(stage: str, log_dir: Path) -> None:
    scalars, images = logged_tags(log_dir)
    gan = stage in GAN
    assert off_scheme(scalars, images, gan) == [], (stage, sorted(scalars), sorted(images))
    assert images, stage
    if gan:
        assert {"train/loss_G", "train/loss_D"} <= scalars, (stage, sorted(scalars))
    else:
        assert "train/loss" in scalars, (stage, sorted(scalars))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_lightning_stage_tags_follow_the_scheme(stage: str, toy: Path, tmp_path: Path) -> None:
    log_dir = run_in_process(stage, tmp_path, *STAGES[stage](toy))
    check(stage, log_dir)
    scalars, _ = logged_tags(log_dir)
    if stage in ("pix2pix", "cyclegan", "photo2cartoon"):
        # LearningRateMonitor's names come from the scheduler configs.
        assert {"train/lr_G", "train/lr_D"} <= scalars, sorted(scalars)
    if stage == "cleaner":
        assert "train/lr" in scalars, sorted(scalars)


@pytest.mark.slow
def test_stylegan3_and_encoder_tags_follow_the_scheme(toy: Path, tmp_path: Path) -> None:
    photo = "stylegan3_photo"
    photo_logs = run_in_process(
        "stylegan3",
        tmp_path,
        *stylegan3_overrides(photo, tmp_path, toy / "trainA"),
        config=photo,
    )
    check(photo, photo_logs)
    scalars, images = logged_tags(photo_logs)
    assert {"metrics/fid", "metrics/kid", "train/r1_penalty"} <= scalars, sorted(scalars)
    assert {"samples/reals", "samples/fakes"} <= images

    generator = write_tiny_checkpoint(tmp_path / "G.pt", seed=0)
    encoder_logs = run_in_process(
        "encoder",
        tmp_path,
        f"encoder.data={toy / 'trainA'}",
        f"encoder.val_data={toy / 'testA'}",
        f"encoder.generator={generator}",
        "encoder.backbone.widths=[16,32,48,64]",
        "encoder.backbone.units=[1,1,1,1]",
        "encoder.input_size=32",
        "encoder.batch_size=2",
        "encoder.num_workers=0",
        "encoder.progressive_start=null",
        "encoder.steps=2",
        "encoder.val_every=2",
        "encoder.val_count=2",
        "+encoder.trainer.log_every_n_steps=1",
    )
    check("encoder", encoder_logs)
    scalars, _ = logged_tags(encoder_logs)
    assert {"train/loss_l2", "train/loss_D", "val/l2", "metrics/psnr"} <= scalars, sorted(scalars)
