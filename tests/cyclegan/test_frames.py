"""Frames from videos: sampling, timestamps, near-duplicate dropping, splits, bad videos, resume."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.cyclegan import frames
from src.cyclegan.frames import (
    FrameSampler,
    FrameSettings,
    build_frames,
    dhash,
    hamming,
    phash,
    prepare_frame,
    video_names,
)
from tests.conftest import run_module

RATE = 10
MOVING_1 = range(0, 20)  # frames 0..19 all differ
STATIC = range(20, 60)  # frames 20..59 are one still picture (4 s)
MOVING_2 = range(60, 70)
FRAME_COUNT = 70


def distinct_picture(seed: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A picture of big random blocks: any two seeds give far-apart perceptual hashes."""
    cells = np.random.default_rng(seed).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(cells).resize((width, height), Image.Resampling.BICUBIC))


def picture_of_frame(index: int) -> np.ndarray:
    return distinct_picture(1000 if index in STATIC else index)


def write_video(path: Path, codec: str = "ffv1", count: int = FRAME_COUNT) -> Path:
    """A ``RATE`` fps video whose frame ``i`` is ``picture_of_frame(i)``, written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(picture_of_frame(index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def settings(**overrides) -> FrameSettings:
    base = {"every_n": 2, "fps": None, "size": 32, "test_fraction": 0.0}
    return FrameSettings(**{**base, **overrides})


def manifest_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mkv")


def test_hashes_ignore_small_noise_and_tell_pictures_apart() -> None:
    picture = Image.fromarray(distinct_picture(1))
    noisy_pixels = np.asarray(picture).astype(int) + np.random.default_rng(0).integers(-3, 4, 1)
    noisy = Image.fromarray(np.clip(noisy_pixels, 0, 255).astype(np.uint8))
    other = Image.fromarray(distinct_picture(2))
    for hasher in (dhash, phash):
        assert hasher(picture) == hasher(picture.copy())
        assert hamming(hasher(picture), hasher(noisy)) <= 2
        assert hamming(hasher(picture), hasher(other)) >= 12
        assert hasher(picture) < 2**64


def test_sampler_every_n_and_target_rate() -> None:
    every_third = FrameSampler(every_n=3)
    assert [i for i in range(10) if every_third.wants(i, i / 25)] == [0, 3, 6, 9]
    two_per_second = FrameSampler(fps=2)
    # 25 fps: frames at or after 0, 0.5, 1.0, 1.5 s.
    assert [i for i in range(40) if two_per_second.wants(i, i / 25)] == [0, 13, 25, 38]


def test_prepare_frame_centre_crops_then_resizes() -> None:
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, 30:70] = 255  # the centre square is white, the sides black
    out = prepare_frame(Image.fromarray(pixels), crop=True, size=20)
    assert out.size == (20, 20)
    assert np.asarray(out).min() == 255
    assert prepare_frame(Image.fromarray(pixels), crop=False, size=20).size == (50, 20)


def test_video_yields_expected_frames_and_timestamps_with_the_static_stretch_dropped(
    clip: Path, tmp_path: Path
) -> None:
    summary = build_frames([clip], tmp_path, settings(), progress=False)
    rows = manifest_rows(tmp_path)
    kept = [*MOVING_1[::2], STATIC[0], *MOVING_2[::2]]
    assert [row["frame"] for row in rows] == kept
    assert [row["time"] for row in rows] == pytest.approx([i / RATE for i in kept])
    assert {row["video"] for row in rows} == {str(clip.resolve())}
    (result,) = summary.results
    assert (result.decoded, result.sampled) == (FRAME_COUNT, FRAME_COUNT // 2)
    assert result.duplicates == len(STATIC) // 2 - 1
    for row in rows:
        with Image.open(tmp_path / row["path"]) as picture:
            assert picture.size == (32, 32)
        assert row["path"].startswith("trainB/clip_f")
    assert (tmp_path / "contact_sheet.png").is_file()
    recorded = json.loads((tmp_path / "summary.json").read_text())
    assert recorded["videos"][0]["duplicates"] == result.duplicates


def test_without_dedup_every_sampled_frame_is_kept_at_the_target_rate(
    clip: Path, tmp_path: Path
) -> None:
    build_frames(
        [clip], tmp_path, settings(every_n=None, fps=2.5, min_hash_distance=0), progress=False
    )
    rows = manifest_rows(tmp_path)
    assert [row["frame"] for row in rows] == list(range(0, FRAME_COUNT, 4))
    assert rows[1]["time"] == pytest.approx(0.4)


def test_lossy_h264_static_scene_gives_one_frame(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", codec="libx264")
    build_frames([video], tmp_path / "out", settings(every_n=1, size=None), progress=False)
    static_rows = [r for r in manifest_rows(tmp_path / "out") if r["frame"] in STATIC]
    assert [r["frame"] for r in static_rows] == [STATIC[0]]
    assert len(manifest_rows(tmp_path / "out")) == len(MOVING_1) + 1 + len(MOVING_2)


def test_split_is_seeded_and_covers_every_frame(clip: Path, tmp_path: Path) -> None:
    split = settings(every_n=1, min_hash_distance=0, test_fraction=0.3)
    build_frames([clip], tmp_path, split, progress=False)
    rows = manifest_rows(tmp_path)
    tests = [row for row in rows if row["split"] == "test"]
    assert len(rows) == FRAME_COUNT
    assert 0.15 * FRAME_COUNT < len(tests) < 0.45 * FRAME_COUNT
    assert len(list((tmp_path / "testB").iterdir())) == len(tests)
    assert all(row["path"].startswith(f"{row['split']}B/") for row in rows)


def test_corrupt_video_is_reported_and_skipped(clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 64)
    out = tmp_path / "out"
    summary = build_frames([broken, clip], out, settings(), progress=False)
    assert [r.error is not None for r in summary.results] == [True, False]
    assert "broken.mp4" in summary.line()
    recorded = json.loads((out / "summary.json").read_text())["videos"][0]
    assert recorded["error"] and recorded["written"] == 0
    assert {row["video"] for row in manifest_rows(out)} == {str(clip.resolve())}


def test_missing_video_or_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"videos: .*nope\.mp4 does not exist"):
        build_frames([tmp_path / "nope.mp4"], tmp_path / "out", settings(), progress=False)
    with pytest.raises(UserError, match="holds no video file"):
        build_frames([tmp_path], tmp_path / "out", settings(), progress=False)
    with pytest.raises(UserError, match="exactly one of every_n"):
        FrameSettings(every_n=2, fps=1.0)


def test_rerun_reuses_finished_videos_and_redoes_changed_settings(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_frames([clip], tmp_path, settings(), progress=False)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("a finished video was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(frames, "extract_video", must_not_decode)
        again = build_frames([clip], tmp_path, settings(), progress=False)
    assert manifest_rows(tmp_path) == [
        {**r, "video": str(clip.resolve())} for r in again.results[0].rows
    ]
    assert again.frames == first.frames
    build_frames([clip], tmp_path, settings(every_n=4), progress=False)
    on_disk = sorted(p.name for p in (tmp_path / "trainB").iterdir())
    assert on_disk == sorted(Path(r["path"]).name for r in manifest_rows(tmp_path))


def test_same_stems_get_unique_names() -> None:
    assert video_names([Path("a/clip.mp4"), Path("b/clip.mp4"), Path("c/my clip!.mkv")]) == [
        "clip",
        "clip-2",
        "my_clip",
    ]


def test_command_line_writes_the_dataset(clip: Path, tmp_path: Path) -> None:
    done = run_module(
        "src.cyclegan.frames", f"videos=[{clip}]", f"out={tmp_path}", "every_n=2", "size=32"
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 16 frames from 1 of 1 videos (19 near-duplicates dropped)" in done.stdout
    failed = run_module("src.cyclegan.frames", f"videos=[{tmp_path}/x.mp4]", f"out={tmp_path}")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: videos:")


def test_truncated_video_keeps_the_frames_before_the_cut(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    summary = build_frames([cut], tmp_path / "out", settings(), progress=False)
    (result,) = summary.results
    assert 0 < result.decoded < FRAME_COUNT
    kept = [row["frame"] for row in manifest_rows(tmp_path / "out")]
    assert kept == [*MOVING_1[::2], STATIC[0], *MOVING_2[::2]][: len(kept)]


def test_a_fast_start_mp4_cut_between_frames_is_reported_partial(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for index in range(60):
            frame = av.VideoFrame.from_ndarray(picture_of_frame(index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(whole)) as container:
        packets = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: packets[12]])  # the moov atom still lists 60 frames
    summary = build_frames([cut], tmp_path / "out", settings(), progress=False)
    (result,) = summary.results
    assert result.decoded == 12 and result.partial
    assert result.error == "truncated: decoded 12 of the 60 frames its header lists"
    assert "partly read (truncated): cut.mp4" in summary.line()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["videos"][0]["partial"]
    complete = build_frames([whole], tmp_path / "out2", settings(), progress=False)
    assert complete.results[0].error is None
