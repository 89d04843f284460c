"""Damaged model files: every loader answers a load or one line, never a traceback.

Seeded mutations of valid files (byte flips biased towards the pickle's opcodes, large length
fields, truncation, insertion) go through the loaders users reach: ``load_networks`` (NVIDIA
pickles and our StyleGAN checkpoints) and ``load_generator`` (exported generators). Each file is
parsed from memory or by torch's bounded reader, so a damaged length cannot allocate beyond the
file; the peak memory of the whole run is checked too.
"""

from __future__ import annotations

import pickletools
import random
import re
import resource
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from src.common.errors import UserError
from src.common.generators import IdentityGenerator, load_generator, save_generator
from src.pix2pix.networks import build_generator
from src.stylegan3.legacy import load_networks
from tests.stylegan3.official import FIXTURE
from tests.stylegan3.tiny import write_tiny_checkpoint

MUTATIONS_PER_FILE = 120
PEAK_GROWTH_BYTES = 2 << 30


def structure_offsets(data: bytes) -> list[int]:
    """Where a file's structure lies: the pickle's opcodes (the data.pkl of a torch zip)."""
    if data.startswith(b"PK"):
        return list(range(min(len(data), 4096))) + list(range(max(0, len(data) - 1024), len(data)))
    offsets = []
    try:
        for op, _, position in pickletools.genops(data):
            if position is not None and op.name not in ("BINBYTES", "BINBYTES8"):
                offsets.append(position)
    except Exception:  # genops stops at the first byte it cannot read; what it read is enough
        pass
    return offsets


def mutate(data: bytes, rng: random.Random, offsets: list[int]) -> tuple[str, bytes]:
    """One seeded damage of ``data`` and what it was."""
    kind = rng.choice(["flip", "flip", "large", "truncate", "insert", "zero-span"])
    at = rng.choice(offsets) if offsets and rng.random() < 0.7 else rng.randrange(len(data))
    if kind == "flip":
        count = rng.randint(1, 4)
        buffer = bytearray(data)
        for i in range(count):
            buffer[min(at + i, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        return f"flip {count} at {at}", bytes(buffer)
    if kind == "large":
        return f"0xff x8 at {at}", data[: at + 1] + b"\xff" * 8 + data[at + 9 :]
    if kind == "truncate":
        return f"truncate at {at}", data[:at]
    if kind == "insert":
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return f"insert {len(extra)} at {at}", data[:at] + extra + data[at:]
    return f"zero 16 at {at}", data[:at] + bytes(16) + data[at + 16 :]


def fuzz(valid: Path, load: Callable[[Path], object], seed: int, folder: Path) -> dict[str, int]:
    """Load ``MUTATIONS_PER_FILE`` damaged copies of ``valid``; fail on anything but a load or a
    one-line UserError. Returns how many of each outcome."""
    data = valid.read_bytes()
    offsets = structure_offsets(data)
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0}
    target = folder / valid.name
    for index in range(MUTATIONS_PER_FILE):
        what, damaged = mutate(data, rng, offsets)
        target.write_bytes(damaged)
        try:
            load(target)
        except UserError as err:
            assert "\n" not in str(err) and str(err), f"mutation {index} ({what}): {err!r}"
            outcomes["refused"] += 1
        except Exception as err:
            pytest.fail(f"mutation {index} ({what}) of {valid.name}: {type(err).__name__}: {err}")
        else:
            outcomes["loaded"] += 1
    return outcomes


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.slow
def test_damaged_files_load_or_fail_in_one_line(tmp_path: Path) -> None:
    ours = write_tiny_checkpoint(tmp_path / "ours.pt")
    unet = save_generator(
        tmp_path / "unet.pt",
        build_generator({"netG": "unet_64", "ngf": 4, "norm": "batch"}),
        family="pix2pix",
        config={"netG": "unet_64", "ngf": 4, "norm": "batch"},
        image_size=64,
    )
    identity = save_generator(
        tmp_path / "identity.pt", IdentityGenerator(), family="identity", config={}, image_size=8
    )
    assert zipfile.is_zipfile(ours) and not zipfile.is_zipfile(FIXTURE)
    before = peak_bytes()
    results = {}
    for seed, (valid, load) in enumerate(
        [(FIXTURE, load_networks), (ours, load_networks), (unet, load_generator)]
    ):
        folder = tmp_path / f"damaged{seed}"
        folder.mkdir()
        results[valid.name] = fuzz(valid, load, seed, folder)
    for name, outcome in results.items():
        assert outcome["refused"] > MUTATIONS_PER_FILE // 10, (name, outcome)
    assert peak_bytes() - before < PEAK_GROWTH_BYTES
    load_generator(identity)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "is a JPEG image, not"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "is a text file"),
        (bytes(range(7, 200)), "its first bytes match no known format"),
        (b"\x80\x04\x95", "truncated network pickle"),
    ],
)
def test_foreign_files_are_named_for_what_they_are(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as raised:
        load_networks(path)
    assert "\n" not in str(raised.value)
    if content[:1] != b"\x80":
        with pytest.raises(UserError, match=re.escape(message)):
            load_generator(path)


def test_our_checkpoint_given_to_convert_is_named(tmp_path: Path) -> None:
    from src.stylegan3.legacy import load_official_pickle

    ours = write_tiny_checkpoint(tmp_path / "ours.ckpt")
    with pytest.raises(UserError, match="is a torch checkpoint, not an official NVIDIA"):
        load_official_pickle(ours)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ours.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated torch checkpoint"):
        load_networks(truncated)
