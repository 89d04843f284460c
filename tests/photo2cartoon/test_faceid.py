"""The face-ID loss: zero for identical faces, positive otherwise, never without weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.photo2cartoon.faceid import FaceIdLoss, MobileFaceNet, face_crop
from src.photo2cartoon.training import Photo2CartoonTraining
from tests.photo2cartoon.reference_layout import InsightFaceMobileFaceNet
from tests.reference_files import reference_state_dict, save_like_reference


def released_recogniser() -> InsightFaceMobileFaceNet:
    """InsightFace's MobileFaceNet(512) with random weights and batch-norm statistics measured
    on random faces, so that, as in a trained net, every layer passes on a signal (with the
    initial statistics a deep stack of small random weights embeds every face alike)."""
    torch.manual_seed(0)
    net = InsightFaceMobileFaceNet(512)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.momentum = None  # plain average over the calibration batch
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    with torch.no_grad():
        net.train()(torch.rand(8, 3, 112, 112) * 2 - 1)
    return net.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model_mobilefacenet.pth`` as InsightFace writes it: the bare ``state_dict()``."""
    path = tmp_path_factory.mktemp("faceid") / "model_mobilefacenet.pth"
    return save_like_reference(reference_state_dict(released_recogniser()), path, "legacy")


def test_released_weights_embed_as_the_reference_does(weights: Path) -> None:
    """The released file predates PyTorch 1.6: legacy format (zip: see tests/pix2pix)."""
    released, path = released_recogniser(), weights
    control = InsightFaceMobileFaceNet(512).eval()  # photo2cartoon's FaceFeatures: strict load
    control.load_state_dict(torch.load(path, weights_only=True))
    loss = FaceIdLoss(path)
    assert isinstance(loss.net, MobileFaceNet)
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = released(faces)
        assert not torch.allclose(expected[0], expected[1], atol=1e-3)
        assert torch.equal(control(faces), expected)
        assert torch.allclose(loss.net(faces), expected, atol=1e-5)


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
