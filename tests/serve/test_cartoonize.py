"""The cartoonize engine and command: paste-back fidelity, ONNX parity, batches, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.integrity import output_checksums
from src.faces import make_detector, paste
from src.serve.cartoonize import cartoonize_files, output_names
from src.serve.engine import Cartoonizer, load_runner
from tests.conftest import run_module
from tests.serve.conftest import PHOTOS


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def test_identity_generator_pastes_back_the_photo(identity_generator: Path) -> None:
    cartoonizer = Cartoonizer(load_runner(identity_generator), make_detector("haar"))
    photo = load("two_faces.jpg")
    result = cartoonizer(photo, paste_back=True)
    assert len(result.cartoons) == 2 and result.pasted is not None
    for aligned, cartoon in zip(result.aligned, result.cartoons, strict=True):
        np.testing.assert_array_equal(cartoon, aligned.image)
    for aligned in result.aligned:
        _, mask = paste(photo, aligned.image, aligned)
        inside = mask > 0.01
        error = ((result.pasted.astype(float) - photo.astype(float)) ** 2)[inside].mean()
        assert 10 * np.log10(255.0**2 / error) >= 35.0


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_generator", "unet_generator"])
def test_onnx_runtime_matches_torch(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    generator = request.getfixturevalue(fixture)
    torch_engine = Cartoonizer(load_runner(generator, "torch"))
    onnx_engine = Cartoonizer(load_runner(generator, "onnx", onnx_dir=tmp_path / "onnx"))
    assert (tmp_path / "onnx" / f"{generator.stem}.onnx").is_file()
    photos = [load("two_faces.jpg"), load("astronaut.jpg")]
    crops = np.stack([f.image for r in torch_engine.process(photos) for f in r.aligned])
    assert len(crops) == 3
    torch_out = torch_engine.generate_float(crops)
    onnx_out = onnx_engine.generate_float(crops)
    assert torch_out.std() > 0.01, "the tiny net does compute something"
    assert np.abs(torch_out - onnx_out).max() <= 1e-3
    faces_torch = [c for r in torch_engine.process(photos) for c in r.cartoons]
    faces_onnx = [c for r in onnx_engine.process(photos) for c in r.cartoons]
    for a, b in zip(faces_torch, faces_onnx, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_batches_skip_unreadable_files_and_report_them(
    identity_generator: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("astronaut.jpg", "two_faces.jpg"):
        (folder / name).write_bytes((PHOTOS / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a picture")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(folder / "blank.png")
    settings = OmegaConf.create(
        {"input": str(folder), "model": str(identity_generator), "mode": "both", "batch_size": 2}
    )
    out = tmp_path / "out"
    report = cartoonize_files(settings, out)
    assert report["faces"] == 3
    assert report["unreadable"] == [{"file": str(folder / "broken.jpg"), "reason": "not_an_image"}]
    assert report["photos"][str(folder / "blank.png")]["faces"] == []
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "astronaut.png",
        "astronaut_face0.png",
        "contact_sheet.png",
        "two_faces.png",
        "two_faces_face0.png",
        "two_faces_face1.png",
    ]
    with Image.open(out / "two_faces_face1.png") as face:
        assert face.size == (256, 256)
    assert json.loads((out / "report.json").read_text())["mode"] == "both"
    # The identity generator returns the aligned photo: dlib sees the same person in each.
    assert report["identity"]["faces"] == 3 and report["identity"]["detection_rate"] == 1.0
    distances = [
        face["identity_distance"] for entry in report["photos"].values() for face in entry["faces"]
    ]
    assert distances == [0.0, 0.0, 0.0]

    before = (out / "astronaut_face0.png").stat().st_mtime_ns
    again = cartoonize_files(settings, out, resume=True)
    assert again["photos"][str(folder / "astronaut.jpg")]["resumed"] is True
    assert (out / "astronaut_face0.png").stat().st_mtime_ns == before


@pytest.mark.slow
def test_command_line_and_smoke_stage(identity_generator: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_module(
        "src.serve.cartoonize",
        f"input={PHOTOS / 'astronaut.jpg'}",
        f"output={out}",
        f"model={identity_generator}",
        "mode=paste",
        f"paths.root_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    assert (out / "astronaut.png").is_file() and not (out / "astronaut_face0.png").exists()
    # As the smoke chain's last stage (its pix2pix generator replaced by the identity).
    stage = run_module(
        "src.serve.cartoonize",
        "+experiment=smoke",
        f"cartoonize.model={identity_generator}",
        f"paths.root_dir={tmp_path}",
    )
    assert stage.returncode == 0, stage.stderr
    stage_dir = tmp_path / "runs" / "smoke" / "cartoonize"
    record = json.loads((stage_dir / "done.json").read_text())
    assert record["outputs"] == ["contact_sheet.png", "report.json"]
    report = json.loads((stage_dir / "report.json").read_text())
    assert report["faces"] == 4 and report["mode"] == "both"
    assert (stage_dir / "two_faces.png").is_file() and (stage_dir / "two_faces_face1.png").is_file()


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    settings = OmegaConf.create({"input": str(PHOTOS), "model": str(tmp_path / "nope.pt")})
    with pytest.raises(UserError, match=r"model=.*nope\.pt does not exist"):
        cartoonize_files(settings, tmp_path / "out")
    with pytest.raises(UserError, match="runtime=tensorrt is unknown"):
        load_runner(tmp_path / "nope.pt", "tensorrt")


def corners(image: np.ndarray) -> np.ndarray:
    """The four corner pixels of an H x W x 3 image."""
    return image[[0, 0, -1, -1], [0, -1, 0, -1]]


def test_photo2cartoon_generators_get_their_crop_and_a_white_background(
    identity_generator: Path, photo2cartoon_generator: Path
) -> None:
    cartoonizer = Cartoonizer(load_runner(photo2cartoon_generator), make_detector("haar"))
    assert cartoonizer.template == "photo2cartoon" and cartoonizer.white
    (face,) = cartoonizer(load("astronaut.jpg")).aligned
    assert face.image.shape == (64, 64, 3)
    assert (corners(face.image) >= 250).all(), "the background around the head is white"
    plain = Cartoonizer(load_runner(identity_generator), make_detector("haar"))
    assert plain.template == "ffhq" and not plain.white
    (face,) = plain(load("astronaut.jpg")).aligned
    assert not (corners(face.image) >= 250).all()


def test_inputs_never_share_an_output_name(identity_generator: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "a.png", "a_jpg.png"):
        shutil.copyfile(PHOTOS / "astronaut.jpg", photos / name)
    paths = sorted(photos.iterdir())
    names = output_names(paths)
    assert len(set(names.values())) == 3
    assert names[photos / "a_jpg.png"] == "a_jpg", "a unique stem keeps its name"
    settings = OmegaConf.create(
        {"input": str(photos), "model": str(identity_generator), "mode": "faces"}
    )
    report = cartoonize_files(settings, tmp_path / "out")
    written = [name for entry in report["photos"].values() for name in entry["outputs"]]
    assert len(written) == 3 and len(set(written)) == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*_face*.png")) == sorted(written)


def test_a_changed_generator_is_one_line(identity_generator: Path, tmp_path: Path) -> None:
    folder = identity_generator.parent
    checksums = output_checksums(folder, [identity_generator.name])
    atomic_write_json(folder / "done.json", {"stage": "pix2pix", "sha256": checksums})
    data = bytearray(identity_generator.read_bytes())
    data[len(data) // 2] ^= 0x01
    identity_generator.write_bytes(bytes(data))
    settings = OmegaConf.create({"input": str(PHOTOS), "model": str(identity_generator)})
    with pytest.raises(UserError, match=r"identity\.pt does not match the SHA-256 that pix2pix"):
        cartoonize_files(settings, tmp_path / "out")
