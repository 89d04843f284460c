"""Checkpoint helpers: atomic save, safe load, and mismatch errors that say what does not fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from src.common.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.integrity import output_checksums


class Executes:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3}}
    path = save_checkpoint(state, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = save_checkpoint({"v": torch.ones(1)}, tmp_path / "ckpt.pt")
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_checkpoint({"bad": lambda: 0}, path)
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": Executes()}, path)
    with pytest.raises(UserError, match=r"holds pickled code \(it asks for print\)"):
        load_checkpoint(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_missing_and_truncated_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint({"w": torch.ones(100)}, tmp_path / "cut.pt")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match="is a truncated torch checkpoint"):
        load_checkpoint(path)


def test_mismatch_error_lists_keys_and_shapes() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.weight"] = torch.zeros(5, 3)
    del state["1.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_checked(model, state, "g.pt")
    message = str(info.value)
    assert message.startswith("g.pt does not fit Sequential")
    assert "1 missing keys: 1.bias" in message
    assert "1 unexpected keys: extra" in message
    assert "1.weight (5, 3) vs model (2, 3)" in message


def test_matching_state_dict_loads() -> None:
    source, target = nn.Linear(4, 3), nn.Linear(4, 3)
    load_state_dict_checked(target, source.state_dict(), "x.pt")
    assert torch.equal(target.weight, source.weight)


def test_a_bit_flipped_stage_output_is_refused_on_load(tmp_path: Path) -> None:
    path = save_checkpoint({"weight": torch.arange(4096.0)}, tmp_path / "network-final.pt")
    atomic_write_json(
        tmp_path / "done.json",
        {"stage": "stylegan3", "sha256": output_checksums(tmp_path, ["network-final.pt"])},
    )
    assert torch.equal(load_checkpoint(path)["weight"], torch.arange(4096.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04  # inside the tensor data: torch.load would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(
        UserError,
        match=r"network-final\.pt does not match the SHA-256 that "
        r"stylegan3 recorded in .*done\.json",
    ):
        load_checkpoint(path)
