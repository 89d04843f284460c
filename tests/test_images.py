"""Image IO against a folder of odd and broken files, all generated here."""

from __future__ import annotations

import logging
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.common.images import (
    BadImageError,
    ImageLoadReport,
    iter_images,
    list_images,
    load_image,
    save_image,
    scan_images,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

GOOD_FILES = [
    "cmyk.jpg",
    "gray16.png",
    "la.png",
    "palette.png",
    "rgb16.png",
    "rotated.jpg",
    "upper.JPG",
]
BAD_FILES = {"empty.jpg": "empty", "text.png": "not_an_image", "truncated.jpg": "truncated"}


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, data: bytes) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB, lying headers)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def rgb16_png(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of an (H, W, 3) uint16 array."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png_bytes(width, height, 16, 2, rows)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Good files in odd modes, bad files, and files that must not be listed."""
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(np.array([[65535, 32896, 0, 257]], dtype=np.uint16)).save(
        tmp_path / "gray16.png"
    )
    la = Image.new("LA", (4, 2), (100, 255))
    la.putpixel((0, 0), (100, 0))
    la.save(tmp_path / "la.png")
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, *RED])
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "palette.png", transparency=0)
    rgb16 = np.array([[[65535, 32896, 0], [0, 0, 65535]]], dtype=np.uint16)
    (tmp_path / "rgb16.png").write_bytes(rgb16_png(rgb16))
    rotated = Image.new("RGB", (40, 20), BLUE)
    rotated.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    noise(16, 16).save(tmp_path / "upper.JPG")

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a picture\n")
    noise(64, 64).save(tmp_path / "truncated.jpg", quality=95)
    data = (tmp_path / "truncated.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])

    noise(8, 8).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "nested").mkdir()
    noise(8, 8).save(tmp_path / "nested" / "deep.png")
    (tmp_path / ".cache").mkdir()
    noise(8, 8).save(tmp_path / ".cache" / "in_hidden_folder.png")
    return tmp_path


def test_list_images_exact(odd_folder: Path) -> None:
    top = sorted([*GOOD_FILES, *BAD_FILES])
    assert list_images(odd_folder) == [odd_folder / name for name in top]
    assert list_images(odd_folder, recursive=True) == sorted(
        [odd_folder / name for name in top] + [odd_folder / "nested" / "deep.png"]
    )


def test_list_images_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_sixteen_bit_grayscale_is_scaled_not_clipped(odd_folder: Path) -> None:
    image = load_image(odd_folder / "gray16.png")
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(4)] == [
        (255, 255, 255),
        (128, 128, 128),
        (0, 0, 0),
        (1, 1, 1),
    ]


def test_sixteen_bit_rgb_is_scaled(odd_folder: Path) -> None:
    image = load_image(odd_folder / "rgb16.png")
    assert image.getpixel((0, 0)) == (255, 128, 0)
    assert image.getpixel((1, 0)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [[0, 32896, 65535]], [0, 128, 255]),
        ("I", [[-100, 0, 100]], [0, 128, 255]),
        ("F", [[0.0, 0.5, 1.0]], [0, 128, 255]),
        ("F", [[0.0, 1000.0, 2000.0]], [0, 128, 255]),
    ],
)
def test_deep_grayscale_tiff_is_scaled(
    tmp_path: Path, mode: str, values: list[list[float]], expected: list[int]
) -> None:
    dtype = np.int32 if mode == "I" else np.float32
    source = Image.fromarray(np.array(values, dtype=dtype))
    assert source.mode == mode
    source.save(tmp_path / "deep.tif")
    image = load_image(tmp_path / "deep.tif")
    assert [image.getpixel((x, 0))[0] for x in range(3)] == expected


def test_alpha_goes_over_white(odd_folder: Path) -> None:
    palette = load_image(odd_folder / "palette.png")
    assert palette.getpixel((0, 0)) == WHITE
    assert palette.getpixel((1, 1)) == RED
    la = load_image(odd_folder / "la.png")
    assert la.getpixel((0, 0)) == WHITE
    assert la.getpixel((1, 0)) == (100, 100, 100)


def test_half_transparent_rgba_blends_with_white(tmp_path: Path) -> None:
    Image.new("RGBA", (2, 2), (0, 0, 0, 128)).save(tmp_path / "half.png")
    assert load_image(tmp_path / "half.png").getpixel((0, 0)) == (127, 127, 127)


def test_cmyk_becomes_rgb(odd_folder: Path) -> None:
    image = load_image(odd_folder / "cmyk.jpg")
    assert image.mode == "RGB"
    assert np.abs(np.array(image.getpixel((4, 4))) - RED).max() <= 8


def test_exif_orientation_is_applied(odd_folder: Path) -> None:
    image = load_image(odd_folder / "rotated.jpg")
    assert image.size == (20, 40)
    # Orientation 6 turns the stored picture a quarter clockwise: top-left goes top-right.
    assert np.abs(np.array(image.getpixel((15, 4))) - RED).max() <= 16
    assert np.abs(np.array(image.getpixel((4, 4))) - BLUE).max() <= 16


def test_iter_images_counts_and_warns(odd_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = ImageLoadReport()
    paths = list_images(odd_folder)
    with caplog.at_level(logging.WARNING, logger="src.common.images"):
        loaded = list(iter_images(paths, report))
    assert [path.name for path, _ in loaded] == GOOD_FILES
    assert all(image.mode == "RGB" for _, image in loaded)
    assert report.loaded == len(GOOD_FILES)
    assert report.skipped == {"truncated": 1, "empty": 1, "not_an_image": 1}
    assert {(path.name, reason) for path, reason in report.skipped_files} == set(BAD_FILES.items())
    assert len(caplog.records) == len(BAD_FILES)
    for name, reason in BAD_FILES.items():
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert report.summary() == (
        f"loaded {len(GOOD_FILES)} images, skipped 3 (empty 1, not_an_image 1, truncated 1)"
    )


@pytest.mark.parametrize("workers", [1, 3])
def test_scan_images_keeps_order_and_counts(
    odd_folder: Path, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    paths = list(reversed(list_images(odd_folder)))
    report = ImageLoadReport()
    with caplog.at_level(logging.WARNING, logger="src.common.images"):
        good = scan_images(paths, report, workers=workers, progress=False)
    assert good == [p for p in paths if p.name in GOOD_FILES]
    assert report.loaded == len(GOOD_FILES)
    assert report.skipped == {"truncated": 1, "empty": 1, "not_an_image": 1}
    assert sorted(r.getMessage().split(":")[0] for r in caplog.records) == sorted(
        f"skipping {odd_folder / name}" for name in BAD_FILES
    )


def test_each_reason_raises_bad_image_error(odd_folder: Path) -> None:
    for name, reason in BAD_FILES.items():
        with pytest.raises(BadImageError) as caught:
            load_image(odd_folder / name)
        assert caught.value.reason == reason
        assert caught.value.path == odd_folder / name
        assert name in str(caught.value)


def test_unreadable_paths(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    for path in (tmp_path / "folder.png", tmp_path / "missing.png"):
        with pytest.raises(BadImageError) as caught:
            load_image(path)
        assert caught.value.reason == "unreadable"


def test_bad_image_error_survives_pickling(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(BadImageError(tmp_path / "x.png", "empty", "0 bytes")))
    assert (error.path, error.reason, error.detail) == (tmp_path / "x.png", "empty", "0 bytes")


def test_decompression_bomb_refused_without_touching_pillow(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    Image.new("L", (2000, 1000)).save(tmp_path / "large.png")
    noise(10, 10).save(tmp_path / "small.png")
    report = ImageLoadReport()
    paths = [tmp_path / "large.png", tmp_path / "small.png"]
    good = scan_images(paths, report, max_pixels=1_000_000, progress=False)
    assert good == [tmp_path / "small.png"]
    assert report.skipped == {"too_large": 1}
    assert load_image(tmp_path / "large.png", max_pixels=2_000_000).size == (2000, 1000)
    assert before == Image.MAX_IMAGE_PIXELS


def test_pillow_bomb_error_and_warning_are_refusals(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    assert before is not None
    side = int((3 * before) ** 0.5)
    (tmp_path / "error.png").write_bytes(png_bytes(side, side, 8, 0, b""))
    with pytest.raises(BadImageError) as caught:
        load_image(tmp_path / "error.png", max_pixels=10 * before)
    assert caught.value.reason == "too_large"

    side = int((1.5 * before) ** 0.5)
    (tmp_path / "warning.png").write_bytes(png_bytes(side, side, 8, 0, b""))
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(BadImageError) as caught:
        load_image(tmp_path / "warning.png", max_pixels=10 * before)
    assert caught.value.reason == "too_large"
    assert before == Image.MAX_IMAGE_PIXELS


def test_save_image_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "picture.png"
    image = noise(12, 9)
    assert save_image(image, target) == target
    assert np.array_equal(np.array(Image.open(target)), np.array(image))

    photo = tmp_path / "out" / "photo.JPG"
    save_image(image, photo, quality=90)
    assert Image.open(photo).format == "JPEG"
    before = photo.read_bytes()
    with pytest.raises(OSError, match="RGBA"):
        save_image(Image.new("RGBA", (4, 4)), photo)
    assert photo.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["photo.JPG", "picture.png"]

    with pytest.raises(UserError, match=r"picture\.xyz"):
        save_image(image, tmp_path / "picture.xyz")


def test_broken_symlinks_and_image_named_folders_are_counted_as_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    noise(8, 8).save(tmp_path / "good.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    (tmp_path / "album.jpg").mkdir()
    listed = list_images(tmp_path)
    assert [p.name for p in listed] == ["album.jpg", "gone.png", "good.png"]
    report = ImageLoadReport()
    with caplog.at_level(logging.WARNING, logger="src.common.images"):
        loaded = [path.name for path, _ in iter_images(listed, report)]
    assert loaded == ["good.png"]
    assert report.summary() == "loaded 1 image, skipped 2 (unreadable 2)"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "broken symbolic link" in messages and "a folder named like an image" in messages
