"""The face-ID loss: zero for identical faces, positive otherwise, never without weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.photo2cartoon.faceid import FaceIdLoss, MobileFaceNet, face_crop
from src.photo2cartoon.training import Photo2CartoonTraining


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("faceid") / "model_mobilefacenet.pth"
    torch.save(MobileFaceNet().state_dict(), path)
    return path


def test_loss_is_zero_for_identical_inputs_and_positive_for_different(weights: Path) -> None:
    loss = FaceIdLoss(weights)
    torch.manual_seed(1)
    faces = torch.rand(2, 3, 64, 64) * 2 - 1
    assert loss(faces, faces.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(faces, torch.flip(faces, dims=[1])).item() > 1e-4


def test_recogniser_is_frozen_and_stays_in_eval_mode(weights: Path) -> None:
    loss = FaceIdLoss(weights).train()
    assert not loss.net.training
    assert not any(p.requires_grad for p in loss.net.parameters())
    faces = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    # (An all-zero image would embed to the zero vector: no direction, no gradient.)
    loss(faces, torch.flip(faces, dims=[3])).backward()
    assert faces.grad is not None and faces.grad.abs().sum() > 0


@pytest.mark.parametrize("path", [None, ""])
def test_refuses_to_run_without_weights(path: str | None) -> None:
    with pytest.raises(UserError, match="faceid_weights"):
        FaceIdLoss(path)


def test_missing_weights_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        FaceIdLoss(tmp_path / "nope.pth")


def test_training_without_weights_turns_the_loss_off_with_one_warning() -> None:
    generator = {"kind": "photo2cartoon", "ngf": 4, "img_size": 32, "n_res": 1}
    with pytest.warns(UserWarning, match="face-ID loss is off") as record:
        module = Photo2CartoonTraining(generator=generator, ndf=4, global_layers=5, local_layers=4)
    assert len(record) == 1
    assert module.faceid is None


def test_face_crop_is_112_pixels_from_the_face_box() -> None:
    images = torch.zeros(1, 3, 256, 256)
    images[:, :, 100, 128] = 1  # inside the box (rows 57..219, centred square)
    images[:, :, 10, 128] = 5  # above it
    crop = face_crop(images)
    assert crop.shape == (1, 3, 112, 112)
    assert 0 < crop.max() <= 1
