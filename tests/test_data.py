"""Joint transforms, datasets, manifests and the Lightning data modules, on generated images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.common.data import (
    PairedDataModule,
    PairedImageDataset,
    PairTransform,
    SingleTransform,
    UnpairedDataModule,
    UnpairedImageDataset,
    pairs_from_folders,
    read_manifest,
    unpaired_from_root,
    write_manifest,
)
from src.common.errors import UserError


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def inverted(image: Image.Image) -> Image.Image:
    return Image.fromarray(255 - np.array(image))


def make_paired_root(root: Path, count: int, size: int = 40) -> Path:
    """``root/A/i.png`` and ``root/B/i.jpg``: B is A inverted, so alignment is checkable."""
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    for i in range(count):
        image = noise(size, size, seed=i)
        image.save(root / "A" / f"{i:03d}.png")
        inverted(image).save(root / "B" / f"{i:03d}.png")
    return root


def make_unpaired_root(root: Path, counts: dict[str, int], size: int = 36) -> Path:
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            noise(size, size, seed=100 * len(folder) + i).save(root / folder / f"{folder}_{i}.png")
    return root


def assert_inverse(tensor_a: torch.Tensor, tensor_b: torch.Tensor) -> None:
    """B was A inverted, so in [-1, 1] it must be -A (up to resize rounding)."""
    assert torch.allclose(tensor_b, -tensor_a, atol=2 * 2 / 255)


def test_pair_transform_crops_and_flips_both_images_alike() -> None:
    image_a = noise(64, 48, seed=1)
    image_b = inverted(image_a)
    transform = PairTransform(load_size=40, crop_size=24, flip=True, train=True)
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        tensor_a, tensor_b = transform(image_a, image_b)
        assert tensor_a.shape == tensor_b.shape == (3, 24, 24)
        assert tensor_a.dtype == torch.float32
        assert type(tensor_a) is torch.Tensor
        assert_inverse(tensor_a, tensor_b)
        outputs.append(tensor_a)
    assert len({tuple(t.flatten()[:8].tolist()) for t in outputs}) > 3, "crops never change"


def test_pair_transform_flips_both_images_alike() -> None:
    image_a = noise(32, 32, seed=4)
    image_b = inverted(image_a)
    upright = SingleTransform(load_size=32, crop_size=32, train=False)(image_a)
    transform = PairTransform(load_size=32, crop_size=32, flip=True, train=True)
    flips = []
    for seed in range(12):
        torch.manual_seed(seed)
        tensor_a, tensor_b = transform(image_a, image_b)
        assert_inverse(tensor_a, tensor_b)
        flipped = torch.equal(tensor_a, upright.flip(-1))
        assert flipped or torch.equal(tensor_a, upright)
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)
    no_flip = PairTransform(load_size=32, crop_size=32, flip=False, train=True)
    assert all(torch.equal(no_flip(image_a, image_b)[0], upright) for _ in range(8))


def test_transforms_are_deterministic_under_manual_seed() -> None:
    image = noise(50, 50, seed=2)
    transform = PairTransform(load_size=40, crop_size=32)
    torch.manual_seed(7)
    first = transform(image, image)
    torch.manual_seed(7)
    second = transform(image, image)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    single = SingleTransform(load_size=40, crop_size=32)
    torch.manual_seed(7)
    assert torch.equal(single(image), first[0])


def test_eval_transform_center_crops_without_flip() -> None:
    image = noise(40, 40, seed=3)
    transform = SingleTransform(load_size=40, crop_size=20, flip=True, train=False)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(transform(image), first)
    expected = torch.from_numpy(np.array(image)[10:30, 10:30]).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(first, expected, atol=1e-6)


def test_values_span_minus_one_to_one() -> None:
    black_white = Image.new("RGB", (32, 32), (0, 0, 0))
    black_white.paste((255, 255, 255), (0, 0, 32, 16))
    tensor = SingleTransform(load_size=32, crop_size=32, train=False)(black_white)
    assert tensor.min().item() == -1.0
    assert tensor.max().item() == 1.0


def test_pairs_from_folders_matches_stems(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    for name in ("x.png", "y.png", "only_a1.png", "only_a2.png"):
        noise(8, 8, 0).save(tmp_path / "A" / name)
    for name in ("x.jpg", "y.webp", "only_b.png"):
        noise(8, 8, 0).save(tmp_path / "B" / name)
    with caplog.at_level(logging.WARNING, logger="src.common.data"):
        pairs = pairs_from_folders(tmp_path)
    assert pairs == [
        (tmp_path / "A" / "x.png", tmp_path / "B" / "x.jpg"),
        (tmp_path / "A" / "y.png", tmp_path / "B" / "y.webp"),
    ]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "2 files in A/" in message and "1 in B/" in message
    assert "only_a1, only_a2" in message and "only_b" in message


def test_pairs_from_folders_errors(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    noise(8, 8, 0).save(tmp_path / "A" / "x.png")
    noise(8, 8, 0).save(tmp_path / "B" / "y.png")
    with pytest.raises(UserError, match=f"{tmp_path}: no file in A/"):
        pairs_from_folders(tmp_path)
    noise(8, 8, 0).save(tmp_path / "A" / "y.png")
    noise(8, 8, 0).save(tmp_path / "A" / "y.jpg")
    with pytest.raises(UserError, match="ambiguous"):
        pairs_from_folders(tmp_path)
    with pytest.raises(UserError, match="elsewhere"):
        pairs_from_folders(tmp_path / "elsewhere")


def test_manifest_round_trip_with_extra_columns(tmp_path: Path) -> None:
    root = make_paired_root(tmp_path / "data", 3)
    pairs = pairs_from_folders(root)
    manifest_path = root / "pairs.csv"
    write_manifest(manifest_path, pairs, {"seed": [5, 6, 7], "score": ["0.5", "0.25", "1"]})
    lines = manifest_path.read_text().splitlines()
    assert lines[:2] == ["a,b,seed,score", "A/000.png,B/000.png,5,0.5"]
    manifest = read_manifest(manifest_path)
    assert manifest.pairs == pairs
    assert manifest.extra_columns == {"seed": ["5", "6", "7"], "score": ["0.5", "0.25", "1"]}

    moved = tmp_path / "moved"
    root.rename(moved)
    assert read_manifest(moved / "pairs.csv").pairs[0] == (moved / "A/000.png", moved / "B/000.png")

    absolute = tmp_path / "absolute.csv"
    absolute.write_text(f"b,a\n{moved / 'B/001.png'},{moved / 'A/001.png'}\n")
    assert read_manifest(absolute).pairs == [(moved / "A/001.png", moved / "B/001.png")]
    with pytest.raises(ValueError, match="score"):
        write_manifest(tmp_path / "bad.csv", pairs, {"score": [1]})


def test_manifest_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("a,label\nx.png,good\n")
    with pytest.raises(UserError, match=r"pairs\.csv: missing column\(s\) b; .* columns a,b"):
        read_manifest(path)
    path.write_text("a,b\nx.png,\n")
    with pytest.raises(UserError, match="line 2"):
        read_manifest(path)


def test_jsonl_manifest_keeps_only_kept_rows_relative_to_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "filtered" / "manifest.filtered.jsonl"
    path.parent.mkdir()
    rows = [
        {"seed": 1, "a": "../gen/A/000001.png", "b": "../gen/B/000001.png", "kept": True},
        {"seed": 2, "a": "../gen/A/000002.png", "b": "../gen/B/000002.png", "kept": False},
        {"seed": 3, "a": "/abs/A/3.png", "b": "/abs/B/3.png"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
    manifest = read_manifest(path)
    assert manifest.pairs == [
        (path.parent / "../gen/A/000001.png", path.parent / "../gen/B/000001.png"),
        (Path("/abs/A/3.png"), Path("/abs/B/3.png")),
    ]
    assert manifest.extra_columns == {"kept": ["True", ""], "seed": ["1", "3"]}
    path.write_text('{"a": "x.png"}\n')
    with pytest.raises(UserError, match=r"manifest\.filtered\.jsonl, line 1: .*'b'"):
        read_manifest(path)
    path.write_text("{oops\n")
    with pytest.raises(UserError, match="line 1: not JSON"):
        read_manifest(path)


def test_paired_dataset_item(tmp_path: Path) -> None:
    pairs = pairs_from_folders(make_paired_root(tmp_path, 2))
    dataset = PairedImageDataset(pairs, PairTransform(36, 32))
    item = dataset[1]
    assert set(item) == {"A", "B", "name"}
    assert item["name"] == "001"
    assert item["A"].shape == item["B"].shape == (3, 32, 32)
    assert_inverse(item["A"], item["B"])


def test_bad_file_after_setup_is_substituted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = pairs_from_folders(make_paired_root(tmp_path, 3))
    dataset = PairedImageDataset(pairs, PairTransform(32, 32, train=False))
    (tmp_path / "A" / "001.png").write_bytes(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING, logger="src.common.data"):
        assert dataset[1]["name"] == "002"
    assert len(caplog.records) == 1
    assert "001.png" in caplog.records[0].getMessage()
    (tmp_path / "B" / "002.png").unlink()
    assert dataset[1]["name"] == "000"
    for name in ("000", "001", "002"):
        (tmp_path / "A" / f"{name}.png").write_bytes(b"")
    with pytest.raises(UserError, match="bad image files"):
        dataset[0]


def test_unpaired_dataset_length_and_pairing(tmp_path: Path) -> None:
    root = make_unpaired_root(tmp_path, {"trainA": 5, "trainB": 3})
    paths_a, paths_b = unpaired_from_root(root, "train")
    transform = SingleTransform(36, 32, train=False)
    serial = UnpairedImageDataset(paths_a, paths_b, transform, serial=True)
    assert len(serial) == 5
    assert [serial[i]["name_b"] for i in range(5)] == [
        "trainB_0",
        "trainB_1",
        "trainB_2",
        "trainB_0",
        "trainB_1",
    ]
    item = serial[4]
    assert set(item) == {"A", "B", "name_a", "name_b"}
    assert item["name_a"] == "trainA_4"
    assert item["A"].shape == item["B"].shape == (3, 32, 32)

    random_b = UnpairedImageDataset(paths_a, paths_b, transform)

    def draw() -> list[str]:
        return [random_b[i]["name_b"] for i in range(5) for _ in range(4)]

    torch.manual_seed(0)
    first = draw()
    torch.manual_seed(0)
    assert draw() == first
    assert len(set(first)) == 3

    fixed = UnpairedImageDataset(paths_a, paths_b, transform, seed=3)
    torch.manual_seed(1)
    names = [fixed[i]["name_b"] for i in range(5)]
    torch.manual_seed(2)
    assert [fixed[i]["name_b"] for i in range(5)] == names
    again = UnpairedImageDataset(paths_a, paths_b, transform, seed=3)
    assert [again[i]["name_b"] for i in range(5)] == names


def test_unpaired_from_root_errors(tmp_path: Path) -> None:
    make_unpaired_root(tmp_path, {"trainA": 2})
    with pytest.raises(UserError, match="trainB"):
        unpaired_from_root(tmp_path, "train")
    (tmp_path / "trainB").mkdir()
    with pytest.raises(UserError, match="trainB: no images"):
        unpaired_from_root(tmp_path, "train")


def batch_names(loader: torch.utils.data.DataLoader, key: str = "name") -> list[str]:
    return [name for batch in loader for name in batch[key]]


def test_paired_data_module(tmp_path: Path) -> None:
    root = make_paired_root(tmp_path / "data", 10)
    (root / "A" / "007.png").write_bytes(b"")
    module = PairedDataModule(
        root=str(root), load_size=36, crop_size=32, batch_size=3, num_workers=0, val_fraction=0.2
    )
    module.setup("fit")
    assert module.scan_report is not None
    assert module.scan_report.skipped == {"empty": 1}
    batch = next(iter(module.train_dataloader()))
    assert batch["A"].shape == batch["B"].shape == (3, 3, 32, 32)
    assert_inverse(batch["A"], batch["B"])
    assert len(batch["name"]) == 3

    val = batch_names(module.val_dataloader())
    train = [a.stem for a, _ in module.train_set.pairs]
    assert set(val).isdisjoint(train)
    assert sorted(val + train) == [f"{i:03d}" for i in range(10) if i != 7]

    again = PairedDataModule(
        root=str(root), load_size=36, crop_size=32, val_fraction=0.2, num_workers=0
    )
    again.setup()
    assert batch_names(again.val_dataloader()) == val


def test_paired_data_module_from_manifest_with_workers(tmp_path: Path) -> None:
    root = make_paired_root(tmp_path / "data", 6)
    write_manifest(root / "pairs.csv", pairs_from_folders(root))
    module = PairedDataModule(
        manifest=str(root / "pairs.csv"),
        load_size=36,
        crop_size=32,
        batch_size=2,
        num_workers=2,
        val_fraction=0.0,
        validate=False,
    )
    module.setup()
    assert module.scan_report is None
    loader = module.train_dataloader()
    assert loader.persistent_workers and loader.drop_last
    assert loader.pin_memory == torch.cuda.is_available()
    batches = list(loader)
    assert len(batches) == 3
    assert sorted(batch_names(batches)) == [f"{i:03d}" for i in range(6)]
    assert module.val_dataloader() == []


def test_unpaired_data_module_uses_test_folders(tmp_path: Path) -> None:
    root = make_unpaired_root(tmp_path, {"trainA": 4, "trainB": 6, "testA": 2, "testB": 1})
    module = UnpairedDataModule(
        root=str(root), load_size=36, crop_size=32, batch_size=2, num_workers=0
    )
    module.setup()
    batch = next(iter(module.train_dataloader()))
    assert batch["A"].shape == batch["B"].shape == (2, 3, 32, 32)
    assert len(module.train_dataloader()) == 3
    val_loader = module.val_dataloader()
    assert not val_loader.drop_last
    assert batch_names(val_loader, "name_a") == ["testA_0", "testA_1"]
    assert batch_names(val_loader, "name_b") == ["testB_0", "testB_0"]
    # Validation sees each test image whole, resized to 32 px, not a crop of a 36 px resize.
    whole = Image.open(root / "testA" / "testA_0.png").resize((32, 32), Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.asarray(whole)).permute(2, 0, 1).float() / 127.5 - 1
    assert (module.val_set[0]["A"] - expected).abs().max() < 0.05


def test_unpaired_data_module_splits_train_without_test_folders(tmp_path: Path) -> None:
    root = make_unpaired_root(tmp_path, {"trainA": 10, "trainB": 10})
    module = UnpairedDataModule(
        root=str(root), load_size=32, crop_size=32, val_fraction=0.2, num_workers=0
    )
    module.setup()
    train_a = {p.stem for p in module.train_set.paths_a}
    val_a = {p.stem for p in module.val_set.paths_a}
    assert len(train_a) == 8 and len(val_a) == 2
    assert train_a.isdisjoint(val_a)
    first_names = batch_names(module.val_dataloader(), "name_b")
    assert batch_names(module.val_dataloader(), "name_b") == first_names


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"crop_size": 300, "load_size": 286}, "crop_size"),
        ({"load_size": 0}, "load_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_config_is_a_user_error_naming_the_key(
    tmp_path: Path, kwargs: dict[str, float], key: str
) -> None:
    with pytest.raises(UserError, match=key):
        PairedDataModule(root=str(tmp_path), **kwargs)
    with pytest.raises(UserError, match=key):
        UnpairedDataModule(root=str(tmp_path), **kwargs)


def test_bad_data_is_a_user_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="root"):
        PairedDataModule(root=str(tmp_path / "missing")).setup()
    with pytest.raises(UserError, match="manifest"):
        PairedDataModule(manifest=str(tmp_path / "missing.csv")).setup()
    with pytest.raises(UserError, match="exactly one of root"):
        PairedDataModule(root=str(tmp_path), manifest=str(tmp_path / "x.csv"))
    with pytest.raises(UserError, match="root"):
        UnpairedDataModule(root=str(tmp_path / "missing")).setup()

    root = make_paired_root(tmp_path / "small", 4)
    with pytest.raises(UserError, match="batch_size"):
        PairedDataModule(root=str(root), load_size=32, crop_size=32, batch_size=4).setup()
    unchecked = PairedDataModule(root=str(root), load_size=32, crop_size=32, validate=False)
    unchecked.setup()
    ((_, val_b),) = unchecked.val_set.pairs
    val_b.write_bytes(b"")
    with pytest.raises(UserError, match="val_fraction"):
        PairedDataModule(root=str(root), load_size=32, crop_size=32).setup()


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1


@pytest.mark.parametrize(
    ("interpolation", "resample"),
    [("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR)],
)
def test_resizes_are_pils_filters(interpolation: str, resample: Image.Resampling) -> None:
    image = noise(50, 30, seed=7)
    # Validation: the whole image resized (the reference's test path), exactly PIL's filter.
    val = SingleTransform(32, 32, train=False, interpolation=interpolation)(image)
    assert torch.allclose(val, to_tensor(image.resize((32, 32), resample)), atol=1e-6)
    # Training: a crop of PIL's resize to load_size, the same crop for both images of a pair.
    resized = to_tensor(image.resize((40, 40), resample))
    transform = PairTransform(40, 32, flip=False, interpolation=interpolation)
    torch.manual_seed(0)
    crop_a, crop_b = transform(image, inverted(image))
    matches = [
        (top, left)
        for top in range(9)
        for left in range(9)
        if torch.allclose(crop_a, resized[:, top : top + 32, left : left + 32], atol=1e-6)
    ]
    assert len(matches) == 1
    assert_inverse(crop_a, crop_b)
    with pytest.raises(UserError, match="interpolation"):
        SingleTransform(32, 32, interpolation="lanczos")


def test_paired_validation_resizes_whole_images_bicubic(tmp_path: Path) -> None:
    root = make_paired_root(tmp_path, 10, size=48)
    module = PairedDataModule(
        root=str(root),
        load_size=40,
        crop_size=32,
        val_fraction=0.2,
        num_workers=0,
        interpolation="bicubic",
    )
    module.setup()
    item = module.val_set[0]
    source = Image.open(root / "A" / f"{item['name']}.png")
    whole = to_tensor(source.resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.allclose(item["A"], whole, atol=1e-6)
    with pytest.raises(UserError, match="interpolation"):
        PairedDataModule(root=str(root), interpolation="nearest")
