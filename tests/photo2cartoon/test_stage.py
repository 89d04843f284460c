"""The photo2cartoon stage end to end on tiny toy faces, and its one-line config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.common.errors import UserError
from src.common.generators import load_generator
from src.common.images import save_image
from src.common.stage import CONFIG_DIR
from src.common.toyfaces.writer import write_toyfaces
from src.photo2cartoon.__main__ import module_options
from src.photo2cartoon.training import LossWeights, Photo2CartoonTraining
from tests.conftest import REPO_ROOT, run_module

TINY = (
    "photo2cartoon.model=ugatit",
    "photo2cartoon.ngf=4",
    "photo2cartoon.n_res=1",
    "photo2cartoon.iterations=3",
    "photo2cartoon.global_layers=5",
    "photo2cartoon.local_layers=4",
    "photo2cartoon.sample_every=2",
    "photo2cartoon.sample_count=2",
    "photo2cartoon.data.load_size=36",
    "photo2cartoon.data.crop_size=32",
    "photo2cartoon.data.num_workers=0",
)


@pytest.mark.slow
def test_stage_trains_and_exports_a_loadable_generator(tmp_path: Path) -> None:
    data = tmp_path / "toy"
    write_toyfaces(
        data,
        seed=0,
        size=32,
        train_count=4,
        test_count=4,
        paired_count=0,
        bad_fraction=0,
        progress=False,
    )
    result = run_module(
        "src.photo2cartoon",
        f"paths.root_dir={tmp_path}",
        f"photo2cartoon.data.root={data}",
        "photo2cartoon.metrics=[fid,kid]",
        "photo2cartoon.metrics_every=3",
        "photo2cartoon.onnx=true",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # FID/KID of the 4 test translations, with the stand-in extractor (no Inception weights).
    assert "photo2cartoon: iteration 3: fid " in result.stderr + result.stdout
    out = tmp_path / "runs" / "default" / "photo2cartoon"
    done = json.loads((out / "done.json").read_text())
    assert set(done["outputs"]) == {
        "generator.pt",
        "grid.png",
        "checkpoints/last.ckpt",
        "generator.onnx",
    }
    # The export command's check: both runtimes against float64, on faces and noise.
    assert "generator.onnx: max abs error against float64 PyTorch" in result.stdout
    bundle = load_generator(out / "generator.pt")
    assert bundle.family == "photo2cartoon" and bundle.image_size == 32
    assert bundle.module(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "translations_000002.png",
        "translations_000003.png",
    ]


@pytest.mark.slow
def test_stage_reports_identity_of_the_test_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src.common.stage import execute_stage
    from src.faces import align_face, make_detector
    from src.photo2cartoon.__main__ import train

    data = tmp_path / "faces"
    write_toyfaces(
        data,
        seed=0,
        size=32,
        train_count=4,
        test_count=0,
        paired_count=0,
        bad_fraction=0,
        progress=False,
    )
    # testA: the shipped photos' aligned faces (real-size faces dlib can find); testB: cartoons.
    detector = make_detector("dlib")
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        photo = np.asarray(Image.open(REPO_ROOT / "tests" / "data" / "photos" / name))
        crop = align_face(photo, detector.detect(photo)[0], 64).image
        save_image(Image.fromarray(crop), data / "testA" / f"{Path(name).stem}.png")
    for path in sorted((data / "trainB").glob("*.png"))[:2]:
        save_image(Image.open(path), data / "testB" / path.name)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "photo2cartoon",
            [
                f"paths.root_dir={tmp_path}",
                f"photo2cartoon.data.root={data}",
                "photo2cartoon.identity=true",
                "logger=tensorboard",
                *TINY,
            ],
        )
    done = execute_stage("photo2cartoon", train, cfg)
    out = Path(cfg.out_dir)
    assert "identity.json" in done["outputs"]
    scores = json.loads((out / "identity.json").read_text())
    # A 3-iteration 32 px generator keeps no face: none found, so no distance either.
    assert scores["identity_pairs"] == 2 and scores["identity_detection_rate"] == 0.0
    assert scores["identity_distance"] is None
    assert "identity on 2 test photos: face found in 0% of the translations" in (
        capsys.readouterr().out
    )
    events = EventAccumulator(str(next(Path(cfg.paths.log_dir).rglob("events.*")).parent))
    logged = events.Reload().Scalars("metrics/identity_detection_rate")
    assert [e.value for e in logged] == [0.0]


def _params(**changes: object) -> DictConfig:
    """The stage's default parameters with ``changes`` (dotted keys) applied."""
    params = OmegaConf.load(REPO_ROOT / "configs" / "photo2cartoon" / "default.yaml")
    params.pop("defaults")
    params.data.root = "faces"
    for key, value in changes.items():
        OmegaConf.update(params, key, value)
    return params


def test_defaults_are_the_reference_settings() -> None:
    options = module_options(_params())
    assert options["generator"] == {
        "kind": "photo2cartoon",
        "ngf": 32,
        "img_size": 256,
        "light": True,
        "n_res": 4,
    }
    assert options["ndf"] == 32
    # photo2cartoon's train.py defaults; U-GAT-IT's main.py has cycle 10 and no face-ID loss.
    release = {"adv": 1.0, "cycle": 50.0, "identity": 10.0, "cam": 1000.0, "faceid": 1.0}
    assert options["weights"] == release
    assert module_options(_params(model="ugatit"))["weights"] == {
        **release,
        "cycle": 10.0,
        "faceid": 0.0,
    }
    assert module_options(_params(cycle_weight=20))["weights"]["cycle"] == 20
    # The module without weights given trains with the same release defaults.
    assert Photo2CartoonTraining(
        generator={"kind": "photo2cartoon", "ngf": 4, "img_size": 32, "n_res": 1},
        ndf=4,
        faceid_weights=None,
        weights={"faceid": 0.0},
    ).weights == LossWeights(faceid=0.0)
    assert LossWeights() == LossWeights(**release)


def test_the_release_run_refuses_to_start_without_face_id_weights() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "photo2cartoon", ["+experiment=photo2cartoon256", "photo2cartoon.data.root=x"]
        )
        off = compose(
            "photo2cartoon",
            [
                "+experiment=photo2cartoon256",
                "photo2cartoon.data.root=x",
                "photo2cartoon.faceid_weight=0",
            ],
        )
    with pytest.raises(UserError) as caught:
        module_options(cfg.photo2cartoon)
    message = str(caught.value)
    assert message.startswith("photo2cartoon.faceid_weights:") and "\n" not in message
    assert "photo2cartoon.faceid_weight=0" in message
    assert module_options(off.photo2cartoon)["weights"]["faceid"] == 0
    # Outside the release run the loss is only switched off, with a warning, as before.
    assert module_options(_params())["faceid_weights"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "cyclegan"}, "photo2cartoon.model"),
        ({"data.crop_size": 40}, "divisible by 16"),
        ({"data.crop_size": 32}, "photo2cartoon.global_layers (7) does not fit"),
        ({"iterations": 0}, "at least 1"),
    ],
)
def test_bad_settings_are_user_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as caught:
        module_options(_params(**changes))
    assert message in str(caught.value)


def test_bad_settings_fail_with_one_line(tmp_path: Path) -> None:
    result = run_module(
        "src.photo2cartoon",
        f"paths.root_dir={tmp_path}",
        f"photo2cartoon.data.root={tmp_path}",
        "photo2cartoon.data.crop_size=40",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: photo2cartoon.data.crop_size")
    assert "Traceback" not in result.stderr
