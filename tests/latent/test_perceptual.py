"""LPIPS VGG16 from files: torchvision's vgg16 state dict mapped into the lpips trunk by name,
the package's own linear heads, NVIDIA's TorchScript calling convention, and one-line errors."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import torch
from torchvision.models import vgg

from src.common.errors import UserError
from src.latent.perceptual import load_perceptual

# torchvision's vgg16 `features`: the 13 convs sit at these indices; LPIPS taps relu1_2, relu2_2,
# relu3_3, relu4_3 and relu5_3, so its five slices end after indices 3, 8, 15, 22 and 29.
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
LPIPS_SLICES = {1: range(4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A file laid out as torchvision saves ``vgg16().state_dict()`` (``features.<i>.*`` and
    ``classifier.<i>.*``); the classifier is shrunk, since the trunk never reads it."""
    torch.manual_seed(0)
    features = vgg.make_layers(vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state.update({"classifier.6.weight": torch.zeros(2, 3), "classifier.6.bias": torch.zeros(2)})
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def package_lpips(vgg16_file):
    return load_perceptual("torchvision", vgg16_file[0])


def test_trunk_holds_torchvisions_conv_weights_at_the_lpips_taps(vgg16_file, package_lpips) -> None:
    _, state = vgg16_file
    assert sorted({int(k.split(".")[1]) for k in state if k.startswith("features")}) == VGG16_CONVS
    lpips_net = package_lpips.lpips
    trunk = lpips_net.net.state_dict()
    assert len(trunk) == 2 * len(VGG16_CONVS)
    for index in VGG16_CONVS:
        (slice_number,) = [n for n, span in LPIPS_SLICES.items() if index in span]
        for kind in ("weight", "bias"):
            assert torch.equal(
                trunk[f"slice{slice_number}.{index}.{kind}"], state[f"features.{index}.{kind}"]
            )
    heads = torch.load(
        importlib.resources.files("lpips") / "weights/v0.1/vgg.pth",
        map_location="cpu",
        weights_only=True,
    )
    own = lpips_net.state_dict()
    for key, value in heads.items():
        assert torch.equal(own[key], value)


def test_lpips_is_zero_for_equal_images_and_grows_with_distortion(package_lpips) -> None:
    net = package_lpips
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy = image + 0.3 * torch.randn(image.shape, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(net(image, image), torch.zeros(2))
    near, far = net(image, 0.9 * image), net(image, noisy.clamp(-1, 1))
    assert near.shape == (2,) and (far > near).all()


def test_nvidia_torchscript_is_called_as_stylegan2_adas_projector_calls_it(tmp_path: Path) -> None:
    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor, resize_images: bool, return_lpips: bool) -> torch.Tensor:
            assert not resize_images and return_lpips
            return x.flatten(1) / 255

    path = tmp_path / "vgg16.pt"
    torch.jit.script(Features()).save(str(path))
    net = load_perceptual("nvidia", path)
    first, second = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    # [-1, 1] -> [0, 255]: -1 and 0 become 0 and 127.5; features /255; 48 squared differences.
    expected = 48 * (127.5 / 255) ** 2
    assert float(net(-second, first)[0]) == pytest.approx(expected)
    assert float(net(first, first)[0]) == 0.0


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"lpips\.vgg16: .*nope\.pth does not exist"):
        load_perceptual("torchvision", tmp_path / "nope.pth")
    with pytest.raises(UserError, match=r"lpips\.vgg16 is not set"):
        load_perceptual("torchvision", None)
    with pytest.raises(UserError, match="torchvision only"):
        load_perceptual("nvidia", "random")
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(UserError, match=r"lacks features\.0\.bias"):
        load_perceptual("torchvision", partial)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(UserError, match="VGG16 needs"):
        load_perceptual("torchvision", wrong)
