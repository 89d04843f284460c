"""FID / KID through torchmetrics: the stand-in extractor, the FID Inception's key check, the
real-set cache and the numbers' behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.common.errors import UserError
from src.common.metrics import (
    STANDIN_LABEL,
    FIDInceptionV3,
    StandInExtractor,
    build_extractor,
    compute_metrics,
)


def smooth_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 images with structure at a few pixels' scale."""
    coarse = torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return (torch.nn.functional.interpolate(coarse, size=size, mode="bilinear") * 255).byte()


def write_folder(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


class CountingStandIn(StandInExtractor):
    """The stand-in, counting the images it has seen."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return super().forward(images)


def measure(fakes, folder: Path, cache: Path, extractor=None, **kwargs) -> dict:
    return compute_metrics(
        fakes,
        folder,
        num=kwargs.pop("num", 48),
        extractor=extractor or StandInExtractor(),
        cache_dir=cache,
        kid_subset_size=24,
        kid_subsets=20,
        progress=False,
        **kwargs,
    )


def test_standin_is_deterministic_and_says_what_it_is() -> None:
    with pytest.warns(UserWarning, match="stand-in"):
        extractor = build_extractor(None)
    images = smooth_images(4)
    assert torch.equal(extractor(images), StandInExtractor()(images))
    assert extractor.label == STANDIN_LABEL and extractor.standin
    assert extractor(images).shape == (4, extractor.num_features)


def test_fid_and_kid_are_zero_against_itself_and_rise_with_a_shift(tmp_path: Path) -> None:
    reals = smooth_images(48)
    folder = write_folder(tmp_path / "real", reals)
    results = [
        measure([(reals.int() + shift).clamp(0, 255).byte()], folder, tmp_path / "cache")
        for shift in (0, 20, 60)
    ]
    same, small, large = results
    assert same["fid"] < 1e-3 and abs(same["kid"]) < 1e-2
    assert 1e-2 < small["fid"] < large["fid"]
    assert same["kid"] < small["kid"] < large["kid"]
    assert same.extractor == STANDIN_LABEL
    assert same["num_real"] == same["num_fake"] == 48


def test_real_features_are_cached_per_file_list_and_extractor(tmp_path: Path) -> None:
    reals = smooth_images(30)
    folder = write_folder(tmp_path / "real", reals)
    extractor = CountingStandIn()
    first = measure([reals], folder, tmp_path / "cache", extractor, num=30)
    assert not first.real_from_cache and extractor.seen == 60
    second = measure([reals], folder, tmp_path / "cache", extractor, num=30)
    assert second.real_from_cache and extractor.seen == 90
    assert second["fid"] == first["fid"]
    # A changed file (new size and mtime) is a new real set.
    Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / "000.png")
    os.utime(folder / "000.png", ns=(1, 1))
    third = measure([reals], folder, tmp_path / "cache", extractor, num=30)
    assert not third.real_from_cache and third["fid"] > first["fid"]
    assert len(list((tmp_path / "cache").glob("real-*.pt"))) == 2


def test_generator_functions_are_called_batch_by_batch_and_rng_is_untouched(
    tmp_path: Path,
) -> None:
    folder = write_folder(tmp_path / "real", smooth_images(8))
    asked = []

    def fakes(count: int) -> torch.Tensor:
        asked.append(count)
        return torch.rand(count, 3, 32, 32) * 2 - 1

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    FIDInceptionV3()
    result = measure(fakes, folder, tmp_path / "cache", num=10, batch_size=4, metrics=["fid"])
    assert torch.equal(torch.rand(3), expected)
    assert asked == [4, 4, 2] and result["num_fake"] == 10 and "kid" not in result


def test_unknown_metric_is_a_user_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "real", smooth_images(4))
    with pytest.raises(UserError, match=r"metrics: .*'is'.* unknown"):
        measure([smooth_images(4)], folder, tmp_path / "cache", metrics=["fid", "is"])


def fake_inception_file(path: Path, drop: str | None = None, extra: str | None = None) -> Path:
    """A state dict with the FID Inception's keys and shapes whose tensors all view one small
    shared buffer (so the file stays a few MB), without BatchNorm batch counters, as published."""
    shapes = {
        k: v.shape
        for k, v in FIDInceptionV3().net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    size = max(s.numel() for s in shapes.values())
    values = torch.randn(size, generator=torch.Generator().manual_seed(0)) * 0.05
    ones = torch.ones(size)
    state = {
        k: (ones if k.endswith("running_var") else values)[: s.numel()].view(s)
        for k, s in shapes.items()
        if k != drop
    }
    if extra:
        state[extra] = values[:1]
    torch.save(state, path)
    return path


def test_fid_inception_loads_its_state_dict_and_gives_2048_features(tmp_path: Path) -> None:
    path = fake_inception_file(tmp_path / "pt_inception.pth")
    extractor = build_extractor(path)
    assert isinstance(extractor, FIDInceptionV3) and not extractor.standin
    assert extractor.extractor_id.startswith("fid-inception-2015-12-05:")
    state = torch.load(path, weights_only=True)
    assert torch.equal(
        extractor.net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"]
    )
    features = extractor(smooth_images(1, size=16))
    assert features.shape == (1, 2048) and torch.isfinite(features).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "Mixed_7c.branch_pool.conv.weight"}, "missing Mixed_7c.branch_pool.conv.weight"),
        ({"extra": "AuxLogits.fc.weight"}, "unexpected AuxLogits.fc.weight"),
    ],
)
def test_fid_inception_key_check_names_the_misfit(tmp_path: Path, change, message) -> None:
    path = fake_inception_file(tmp_path / "bad.pth", **change)
    with pytest.raises(UserError, match=message):
        build_extractor(path)


def test_missing_inception_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"inception: .*nope\.pth does not exist"):
        build_extractor(tmp_path / "nope.pth")
