"""Toy faces: determinism, exact landmarks, the two styles, defects and the dataset writer."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.common.toyfaces import (
    CARTOON_EYE_SCALE,
    DEFECT_KINDS,
    HAIR_STYLES,
    LANDMARK_NAMES,
    Defect,
    is_bad,
    landmarks,
    make_face,
    render,
    render_masks,
    sample_defect,
    sample_face,
    sample_params,
    write_toyfaces,
)

SMALL = 40
IMAGE_DIRS = ("trainA", "trainB", "testA", "testB", "paired/A", "paired/B")


def write(out: Path, **overrides: object) -> list[str]:
    """A small, fast dataset; keyword arguments override the defaults."""
    kwargs: dict = {
        "seed": 7,
        "size": SMALL,
        "train_count": 3,
        "test_count": 2,
        "paired_count": 6,
        "bad_fraction": 0.5,
        "contact_sheet_pairs": 5,
        "progress": False,
    }
    kwargs.update(overrides)
    return write_toyfaces(out, **kwargs)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size]
    return xs + 0.5, ys + 0.5


# --- determinism ---------------------------------------------------------------------------------


def test_written_pngs_depend_only_on_seed_stream_index_and_size(tmp_path: Path) -> None:
    write(tmp_path / "one", train_count=5, paired_count=5)
    write(tmp_path / "two", train_count=5, paired_count=5)
    write(tmp_path / "longer", train_count=10, paired_count=10)
    write(tmp_path / "reseeded", seed=8, train_count=5, paired_count=5)
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    longer, reseeded = tree(tmp_path / "longer"), tree(tmp_path / "reseeded")
    assert one == two
    for folder in IMAGE_DIRS:
        for index in range(2 if folder.startswith("test") else 5):
            name = f"{folder}/{index:06d}.png"
            assert one[name] == longer[name], name
            assert one[name] != reseeded[name], name
    assert one["trainA/000000.png"] != one["testA/000000.png"]


def test_make_face_is_deterministic_and_unpaired_streams_differ() -> None:
    first, again = make_face(3, "trainA", 4, 64), make_face(3, "trainA", 4, 64)
    assert np.array_equal(first.photo, again.photo)
    assert np.array_equal(first.cartoon, again.cartoon)
    assert first.params == again.params
    assert first.params != make_face(3, "trainB", 4, 64).params
    assert first.params != make_face(3, "trainA", 5, 64).params
    assert first.photo.dtype == np.uint8 and first.photo.shape == (64, 64, 3)


def test_bad_face_is_the_good_face_plus_a_defect() -> None:
    good_params, no_defect = sample_face(1, "paired", 2, bad=False)
    bad_params, defect = sample_face(1, "paired", 2, bad=True)
    assert no_defect is None and defect is not None
    assert bad_params == good_params


@pytest.mark.parametrize("size", [32, 33, 97, 256])
def test_every_size_from_32_to_256_renders(size: int) -> None:
    face = make_face(0, "sizes", size, size)
    assert face.photo.shape == face.cartoon.shape == (size, size, 3)


def test_sampled_faces_cover_every_hair_style() -> None:
    rng = np.random.default_rng(0)
    styles = Counter(sample_params(rng).hair_style for _ in range(300))
    assert set(styles) == set(HAIR_STYLES)


# --- landmarks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256])
def test_landmarks_are_the_centres_and_ends_of_the_rendered_shapes(size: int) -> None:
    xs, ys = pixel_centres(size)
    for index in range(6):
        params, _ = sample_face(11, "landmarks", index, bad=False)
        points = landmarks(params, size)
        assert set(points) == set(LANDMARK_NAMES)
        for x, y in points.values():
            assert 0 < x < size and 0 < y < size
        assert points["left_eye"][0] < points["right_eye"][0]
        assert points["mouth_left"][0] < points["mouth_right"][0]
        for style in ("photo", "cartoon"):
            masks = render_masks(params, size, style)
            for eye in ("left_eye", "right_eye"):
                weight = masks[eye]
                centroid = (np.sum(weight * xs) / weight.sum(), np.sum(weight * ys) / weight.sum())
                assert math.dist(centroid, points[eye]) < 0.5, (index, style, eye)
            left, right = np.array(points["mouth_left"]), np.array(points["mouth_right"])
            axis = (right - left) / np.linalg.norm(right - left)
            middle, half = (left + right) / 2, np.linalg.norm(right - left) / 2
            # Pixels the mouth touches at all reach half a pixel past its ends, at most.
            inside = masks["mouth"] > 0
            along = (xs[inside] - middle[0]) * axis[0] + (ys[inside] - middle[1]) * axis[1]
            assert abs(along.max() - half) < 1.0, (index, style)
            assert abs(-along.min() - half) < 1.0, (index, style)


def test_both_styles_draw_the_eyes_at_the_shared_landmarks() -> None:
    face = make_face(5, "paired", 1, 128)
    assert face.landmarks == landmarks(face.params, 128)
    skin = np.array(face.params.skin) * 255
    for style, image in (("photo", face.photo), ("cartoon", face.cartoon)):
        masks = render_masks(face.params, 128, style)
        for eye in ("left_eye", "right_eye"):
            eye_pixels = image[masks[eye] > 0.99].astype(float)
            assert np.abs(eye_pixels - skin).mean() > 40, (style, eye)


def test_drawn_cartoon_eyes_are_centred_on_the_landmarks() -> None:
    """Every pixel the eyes change (eye, iris, outline) is centred on the eye landmark."""
    xs, ys = pixel_centres(128)
    for index in range(4):
        params, _ = sample_face(6, "drawn", index, bad=False)
        # Centred irises, and brows moved well away, so the drawn eye is symmetric.
        params = dataclasses.replace(params, gaze=(0.0, 0.0), brow_gap=0.4)
        with_eyes = render(params, "cartoon", 128)
        without_eyes = render(params, "cartoon", 128, Defect("missing", "both", 0, 1.0))
        changed = (with_eyes != without_eyes).any(axis=-1)
        points = landmarks(params, 128)
        reach = math.dist(points["left_eye"], points["right_eye"]) / 2
        for eye in ("left_eye", "right_eye"):
            x, y = points[eye]
            near = changed & (np.abs(xs - x) < reach) & (np.abs(ys - y) < reach)
            assert abs(xs[near].mean() - x) < 0.5, (index, eye)
            assert abs(ys[near].mean() - y) < 1.0, (index, eye)


def test_cartoon_eyes_are_larger_around_the_same_centres() -> None:
    params, _ = sample_face(2, "eyes", 0, bad=False)
    photo, cartoon = render_masks(params, 128, "photo"), render_masks(params, 128, "cartoon")
    ratio = cartoon["left_eye"].sum() / photo["left_eye"].sum()
    assert ratio == pytest.approx(CARTOON_EYE_SCALE**2, rel=0.08)


# --- styles and defects ---------------------------------------------------------------------------


def test_cartoon_is_flat_and_photo_is_shaded() -> None:
    for index in range(4):
        face = make_face(9, "styles", index, 128)
        stats = {}
        for style, image in (("photo", face.photo), ("cartoon", face.cartoon)):
            _, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
            top_eight_share = np.sort(counts)[::-1][:8].sum() / counts.sum()
            stats[style] = (len(counts), top_eight_share)
        assert stats["cartoon"][0] * 3 < stats["photo"][0]
        assert stats["cartoon"][1] > 0.8 > 0.2 > stats["photo"][1]


def test_cartoon_has_dark_outlines() -> None:
    """On a face with no dark colours at all, the cartoon's dark pixels are its outlines."""
    for index in range(3):
        params, _ = sample_face(9, "outlines", index, bad=False)
        light = dataclasses.replace(
            params,
            skin=(0.95, 0.8, 0.7),
            hair_color=(0.9, 0.8, 0.5),
            brow_color=(0.7, 0.6, 0.4),
            clothing=(0.8, 0.8, 0.9),
            background=(0.9, 0.9, 0.9),
            background_end=(0.8, 0.8, 0.85),
        )
        dark = {s: (render(light, s, 128).max(axis=-1) < 60).mean() for s in ("photo", "cartoon")}
        assert dark["cartoon"] > 0.01 > 0.005 > dark["photo"]


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_kind_breaks_both_styles_strongly_at_64px(kind: str) -> None:
    for index in range(5):
        params, _ = sample_face(4, "defects", index, bad=False)
        defect = Defect(kind=kind, target="both", seed=100 + index, strength=0.8)
        for style in ("photo", "cartoon"):
            good = render(params, style, 64)
            bad = render(params, style, 64, defect)
            assert np.array_equal(bad, render(params, style, 64, defect))
            changed = (np.abs(good.astype(int) - bad.astype(int)).max(axis=-1) > 30).mean()
            assert changed > 0.003, (kind, style, index)


def test_sampled_defects_cover_every_kind_and_mostly_target_both() -> None:
    rng = np.random.default_rng(1)
    defects = [sample_defect(rng) for _ in range(400)]
    assert {d.kind for d in defects} == set(DEFECT_KINDS)
    both = sum(d.target == "both" for d in defects) / len(defects)
    assert 0.6 < both < 0.8
    assert {d.target for d in defects} == {"both", "cartoon"}


def test_cartoon_only_defect_keeps_the_photo_good() -> None:
    targets = set()
    for index in range(40):
        bad, clean = make_face(2, "paired", index, 48, bad=True), make_face(2, "paired", index, 48)
        assert bad.defect is not None
        assert not np.array_equal(bad.cartoon, clean.cartoon)
        assert np.array_equal(bad.photo, clean.photo) == (bad.defect.target == "cartoon")
        targets.add(bad.defect.target)
        if targets == {"both", "cartoon"}:
            break
    assert targets == {"both", "cartoon"}


def test_bad_subset_matches_the_rounded_fraction_for_every_count() -> None:
    for fraction in (0.0, 0.1, 0.2, 0.25, 0.5, 1 / 3, 0.75, 1.0):
        flags = [is_bad(index, fraction) for index in range(200)]
        for count in (0, 1, 7, 10, 33, 200):
            assert sum(flags[:count]) == math.floor(count * fraction + 0.5), (fraction, count)


# --- writer --------------------------------------------------------------------------------------


def test_writer_output_tree_labels_landmarks_and_contact_sheet(tmp_path: Path) -> None:
    outputs = write(tmp_path, progress=True)
    assert outputs == [
        "trainA",
        "trainB",
        "testA",
        "testB",
        "paired",
        "landmarks.json",
        "contact_sheet.png",
    ]
    counts = {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2, "paired/A": 6, "paired/B": 6}
    for folder, count in counts.items():
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == [f"{index:06d}.png" for index in range(count)], folder
    with Image.open(tmp_path / "paired/B/000005.png") as image:
        assert image.size == (SMALL, SMALL) and image.mode == "RGB"

    with open(tmp_path / "paired/labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "label", "defect", "target"]
    assert [row["id"] for row in rows] == [f"{index:06d}" for index in range(6)]
    bad = [row for row in rows if row["label"] == "bad"]
    assert len(bad) == 3 and all(row["defect"] in DEFECT_KINDS for row in bad)
    assert all(row["target"] in ("both", "cartoon") for row in bad)
    assert all(row["defect"] == row["target"] == "" for row in rows if row["label"] == "good")

    points = json.loads((tmp_path / "landmarks.json").read_text())
    meta = points.pop("_meta")
    assert meta["size"] == SMALL and "convention" in meta
    expected = {f"{folder}/{i:06d}.png" for folder, n in counts.items() for i in range(n)}
    assert set(points) == expected
    assert points["paired/A/000002.png"] == points["paired/B/000002.png"]
    params, _ = sample_face(7, "trainB", 1, bad=False)
    assert points["trainB/000001.png"]["left_eye"] == pytest.approx(
        landmarks(params, SMALL)["left_eye"], abs=1e-4
    )

    with Image.open(tmp_path / "contact_sheet.png") as sheet:
        # 5 pairs, 4 a row: 8 columns x 2 rows of SMALL-pixel cells with 12-pixel captions.
        assert sheet.size == (8 * SMALL + 9 * 2, 2 * (SMALL + 12) + 3 * 2)


def test_resume_completes_a_damaged_tree_byte_for_byte(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    write(clean)
    expected = tree(clean)

    damaged = tmp_path / "damaged"
    write(damaged)
    (damaged / "trainA/000001.png").unlink()
    (damaged / "paired/B/000004.png").unlink()
    (damaged / "landmarks.json").unlink()
    (damaged / "contact_sheet.png").unlink()
    (damaged / "paired/A/.000003.png.x1y2z3.tmp").write_bytes(b"half a png")
    (damaged / ".landmarks.json.abc.tmp").write_text("{")
    (damaged / "testB/000009.png").write_bytes(b"surplus")
    kept = damaged / "trainB/000000.png"
    Image.new("RGB", (SMALL, SMALL)).save(kept)

    write(damaged, resume=True)
    assert tree(damaged)["trainB/000000.png"] == kept.read_bytes() != expected["trainB/000000.png"]
    kept.unlink()
    write(damaged, resume=True)
    assert tree(damaged) == expected


def test_rerun_without_resume_removes_stale_files_but_not_others(tmp_path: Path) -> None:
    rerun, fresh = tmp_path / "rerun", tmp_path / "fresh"
    write(rerun, train_count=6, paired_count=6)
    (rerun / "notes.txt").write_text("mine")
    write(rerun, train_count=4, paired_count=4)
    for folder in ("trainA", "trainB", "paired/A", "paired/B"):
        assert len(list((rerun / folder).iterdir())) == 4, folder
    assert len((rerun / "paired/labels.csv").read_text().splitlines()) == 1 + 4
    assert (rerun / "notes.txt").read_text() == "mine"
    write(fresh, train_count=4, paired_count=4)
    assert tree(rerun) == {**tree(fresh), "notes.txt": b"mine"}


def test_resume_with_a_smaller_count_drops_the_surplus(tmp_path: Path) -> None:
    write(tmp_path / "shrunk", train_count=6, paired_count=6)
    write(tmp_path / "shrunk", train_count=4, paired_count=4, resume=True)
    write(tmp_path / "fresh", train_count=4, paired_count=4)
    assert tree(tmp_path / "shrunk") == tree(tmp_path / "fresh")


def test_resume_refuses_a_folder_written_with_another_seed(tmp_path: Path) -> None:
    write(tmp_path)
    with pytest.raises(UserError, match="seed"):
        write(tmp_path, seed=8, resume=True)


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    write(tmp_path / "one", train_count=40, paired_count=40, workers=1)
    write(tmp_path / "two", train_count=40, paired_count=40, workers=2)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"size": 31}, "size"),
        ({"size": 257}, "size"),
        ({"size": 64.0}, "size"),
        ({"train_count": -1}, "train_count"),
        ({"test_count": -2}, "test_count"),
        ({"paired_count": -1}, "paired_count"),
        ({"bad_fraction": 1.5}, "bad_fraction"),
        ({"bad_fraction": -0.1}, "bad_fraction"),
        ({"workers": 0}, "workers"),
    ],
)
def test_invalid_arguments_raise_a_user_error_naming_the_key(
    tmp_path: Path, overrides: dict, key: str
) -> None:
    with pytest.raises(UserError, match=key):
        write(tmp_path, **overrides)
    assert not (tmp_path / "trainA").exists()


def test_render_rejects_sizes_outside_32_to_256() -> None:
    params, _ = sample_face(0, "x", 0, bad=False)
    with pytest.raises(UserError, match="size"):
        render(params, "photo", 300)
    with pytest.raises(ValueError, match="style"):
        render(params, "sketch", 64)
