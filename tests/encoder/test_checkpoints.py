"""Official e4e / ReStyle checkpoints (written as the releases write them, from independent
reference modules) load by key mapping with the reference's outputs; bad files are one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.encoder.checkpoints import load_encoder, save_encoder
from src.encoder.networks import Encoder4Editing, build_encoder
from tests.encoder.reference_layout import (
    ReferenceEncoder,
    randomized,
    write_release_checkpoint,
)

TINY = {"widths": (16, 32, 48, 64), "units": (1, 2, 2, 1)}
CASES = {
    # kind: (n_styles, w_dim, input size, input channels)
    "e4e": (10, 24, 64, 3),
    "restyle_e4e": (6, 24, 32, 6),
    "restyle_psp": (6, 24, 32, 6),
}


def reference(kind: str, seed: int = 0) -> ReferenceEncoder:
    n_styles, w_dim, size, channels = CASES[kind]
    torch.manual_seed(seed)
    module = ReferenceEncoder(kind, n_styles, w_dim, size, channels, **TINY)
    return randomized(module, seed)


def photos(kind: str, count: int = 3) -> torch.Tensor:
    _, _, size, channels = CASES[kind]
    return torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_release_checkpoint_loads_with_the_reference_outputs(tmp_path: Path, kind: str) -> None:
    ref = reference(kind)
    n_styles, w_dim, size, channels = CASES[kind]
    latent_avg = torch.randn(n_styles, w_dim)
    path = write_release_checkpoint(tmp_path / f"{kind}.pt", ref, kind, latent_avg)
    bundle = load_encoder(path)
    assert bundle.encoder.kind == kind
    assert bundle.config["input_size"] == size and bundle.config["in_channels"] == channels
    assert bundle.iterative == (channels == 6)
    torch.testing.assert_close(bundle.latent_avg, latent_avg, rtol=0, atol=0)
    x = photos(kind)
    with torch.no_grad():
        torch.testing.assert_close(bundle.encoder(x), ref(x), rtol=0, atol=0)


def test_restyle_heads_differ_on_the_same_weights(tmp_path: Path) -> None:
    """ReStyle-e4e and -pSp share keys; opts.encoder_type picks the head arithmetic."""
    ref = reference("restyle_e4e")
    avg = torch.zeros(6, 24)
    e4e = load_encoder(write_release_checkpoint(tmp_path / "a.pt", ref, "restyle_e4e", avg))
    psp = load_encoder(write_release_checkpoint(tmp_path / "b.pt", ref, "restyle_psp", avg))
    x = photos("restyle_e4e")
    with torch.no_grad():
        assert not torch.allclose(e4e.encoder(x), psp.encoder(x))
        assert torch.equal(e4e.encoder(x)[:, 0], psp.encoder(x)[:, 0])


def test_one_latent_average_row_is_repeated_for_every_style(tmp_path: Path) -> None:
    ref = reference("e4e")
    avg = torch.randn(24)
    bundle = load_encoder(write_release_checkpoint(tmp_path / "e4e.pt", ref, "e4e", avg))
    assert bundle.latent_avg.shape == (10, 24)
    assert torch.equal(bundle.latent_avg[7], avg)


def test_progressive_stage_limits_the_offsets() -> None:
    encoder = randomized(
        build_encoder({"kind": "e4e", "n_styles": 10, "w_dim": 24, "input_size": 64, **TINY}), 3
    )
    x = photos("e4e")
    with torch.no_grad():
        full = encoder(x)
        encoder.progressive_stage = 2
        partial = encoder(x)
    assert torch.equal(partial[:, :3], full[:, :3])
    assert torch.equal(partial[:, 3:], partial[:, :1].expand(-1, 7, -1))
    encoder.progressive_stage = 0
    with torch.no_grad():
        assert torch.equal(encoder(x), full[:, :1].expand(-1, 10, -1))


def test_our_encoder_file_round_trips(tmp_path: Path) -> None:
    encoder = randomized(
        build_encoder(
            {"kind": "restyle_e4e", "n_styles": 6, "w_dim": 24, "input_size": 32, **TINY}
        ),
        4,
    )
    avg = torch.randn(24)
    bundle = load_encoder(save_encoder(tmp_path / "ours.pt", encoder, avg))
    x = photos("restyle_e4e")
    with torch.no_grad():
        assert torch.equal(bundle.encoder(x), encoder(x))
    assert torch.equal(bundle.latent_avg, avg.expand(6, -1))


class Payload:
    """Runs a shell command when unpickled, as a hostile checkpoint would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "latent_avg": Payload(marker)}, path)
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert "pickled code" in one_line(err)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"<html>not found</html>", "text file"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "PNG"),
    ],
)
def test_files_that_are_no_checkpoint(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "e4e_ffhq_encode.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert needle in one_line(err) and str(path) in str(err.value)


def test_truncated_release_checkpoint(tmp_path: Path) -> None:
    path = write_release_checkpoint(tmp_path / "e4e.pt", reference("e4e"), "e4e", torch.zeros(24))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert "truncated" in one_line(err)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ([1, 2, 3], "official e4e/ReStyle checkpoint"),
        ({"state_dict": {"decoder.x": torch.zeros(1)}}, "no encoder.*"),
        (
            {
                "state_dict": {"encoder.body.0.x": torch.zeros(1)},
                "latent_avg": torch.zeros(4),
                "opts": {"encoder_type": "Encoder4Editing"},
            },
            "not an e4e/ReStyle IR-SE encoder",
        ),
    ],
)
def test_damaged_payloads(tmp_path: Path, payload: object, needle: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert needle in one_line(err)


def test_unknown_encoder_type_and_missing_latent_average(tmp_path: Path) -> None:
    ref = reference("e4e")
    path = write_release_checkpoint(
        tmp_path / "a.pt", ref, "e4e", torch.zeros(24), {"encoder_type": "GradualStyleEncoder"}
    )
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert "GradualStyleEncoder" in one_line(err)
    checkpoint = torch.load(path)
    del checkpoint["latent_avg"]
    checkpoint["opts"]["encoder_type"] = "Encoder4Editing"
    torch.save(checkpoint, path)
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert "latent_avg" in one_line(err)


def test_latent_average_of_the_wrong_length(tmp_path: Path) -> None:
    path = write_release_checkpoint(tmp_path / "a.pt", reference("e4e"), "e4e", torch.zeros(4, 24))
    with pytest.raises(UserError) as err:
        load_encoder(path)
    assert "4 rows for 10" in one_line(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_encoder(tmp_path / "nope.pt")
    assert "does not exist" in one_line(err)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "n_styles", "channels"),
    [("e4e", 18, 3), ("restyle_e4e", 16, 6), ("restyle_psp", 16, 6)],
)
def test_full_size_keys_and_shapes_match_the_release(kind: str, n_styles: int, channels: int):
    """IR-SE50 at 256 px: our names and shapes are the releases' (e4e at 1024: 18 styles;
    stylegan3-editing's ReStyle: 16 styles, 6 channels)."""
    ours = build_encoder({"kind": kind, "n_styles": n_styles, "in_channels": channels})
    ref = ReferenceEncoder(kind, n_styles, 512, 256, channels, (64, 128, 256, 512), (3, 4, 14, 3))
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours_shapes == ref_shapes
    if kind == "e4e":
        assert isinstance(ours, Encoder4Editing)
        assert ours.stage_ends == [2, 6, 20, 23]
        assert "styles.17.convs.10.weight" in ours_shapes  # fine heads: 64 px -> 6 convs
