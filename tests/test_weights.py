"""The weights table: where each file comes from, in errors and in ``weights check``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from src.common.errors import UserError
from src.common.weights import KNOWN_FILES, check_files, main, parse_args, where_to_get
from src.stylegan3.legacy import load_networks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_a_missing_official_pickle_says_where_to_get_it(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "stylegan3-t-ffhqu-256x256.pkl"
    with pytest.raises(UserError) as err:
        load_networks(missing)
    message = str(err.value)
    assert message.startswith(f"network file {missing} does not exist; download ")
    assert "nvidia/research/stylegan3/versions/1/files/stylegan3-t-ffhqu-256x256.pkl" in message
    assert message.endswith("(README: Weights)")


def test_only_known_files_get_a_source() -> None:
    assert where_to_get("elsewhere/model_mobilefacenet.pth").startswith("; download model_")
    assert where_to_get("cartoon.pt") == ""


def test_every_known_file_is_in_the_readme_table() -> None:
    table = README.read_text(encoding="utf-8").split("## Weights", 1)[1].split("\n## ", 1)[0]
    for row in KNOWN_FILES:
        assert f"| `{row.name}` |" in table, row.name


def test_check_verifies_published_checksums_and_lists_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inception = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    inception.write_bytes(b"not the inception weights")
    (tmp_path / "resnet18.safetensors").write_bytes(b"weights")
    status = {row.name: (s, digest) for row, s, digest in check_files(tmp_path)}
    assert status[inception.name] == (
        "MISMATCH",
        hashlib.sha256(b"not the inception weights").hexdigest(),
    )
    assert status["resnet18.safetensors"][0] == "present (no published checksum)"
    assert status["stylegan3-t-ffhqu-256x256.pkl"] == ("missing", "")
    assert main(["check", f"dir={tmp_path}"]) == 1
    printed = capsys.readouterr().out
    assert "MISMATCH" in printed and "stylegan3-t-ffhqu-256x256.pkl" in printed

    inception.unlink()
    assert main(["check", f"dir={tmp_path}"]) == 0


def test_check_arguments() -> None:
    assert parse_args(["check", "dir=w"]) == Path("w")
    with pytest.raises(UserError, match="usage"):
        parse_args([])
    with pytest.raises(UserError, match="unexpected argument 'folder=w'"):
        parse_args(["check", "folder=w"])
