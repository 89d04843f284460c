"""Stage bookkeeping: what the config hash sees, when a stage counts as done, override routing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src.common.errors import UserError
from src.common.integrity import verify_recorded_sha256
from src.common.stage import (
    CONFIG_DIR,
    config_hash,
    environment_error,
    execute_stage,
    read_record,
    requested_config_name,
    stage_help,
    upstream_run_ids,
    why_not_done,
)
from src.pipeline.runner import first_key_component, overrides_for_stage
from tests.conftest import run_module

CHAIN = ["toyfaces", "pix2pix"]


def chain_cfg(**changes):
    cfg = OmegaConf.create(
        {
            "stage": "pix2pix",
            "seed": 0,
            "run_name": "r",
            "hash_ignores": ["logger"],
            "logger": {"tb": {"save_dir": "x"}},
            "paths": {"run_dir": "runs/r"},
            "pipeline": {"stages": CHAIN, "force": []},
            "toyfaces": {"size": 64},
            "pix2pix": {"ngf": 8},
        }
    )
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_hash_follows_own_and_shared_keys_only() -> None:
    base = config_hash(chain_cfg(), "pix2pix")
    assert config_hash(chain_cfg(), "pix2pix") == base
    assert config_hash(chain_cfg(**{"pix2pix.ngf": 16}), "pix2pix") != base
    assert config_hash(chain_cfg(seed=1), "pix2pix") != base
    assert config_hash(chain_cfg(seed=1), "toyfaces") != config_hash(chain_cfg(), "toyfaces")
    assert config_hash(chain_cfg(**{"toyfaces.size": 32}), "pix2pix") == base
    assert config_hash(chain_cfg(**{"pipeline.force": ["pix2pix"]}), "pix2pix") == base
    assert config_hash(chain_cfg(**{"logger.tb.save_dir": "y"}), "pix2pix") == base


def test_hash_resolves_interpolations() -> None:
    a = chain_cfg(**{"pix2pix.size": "${toyfaces.size}"})
    b = chain_cfg(**{"pix2pix.size": "${toyfaces.size}", "toyfaces.size": 32})
    assert config_hash(a, "pix2pix") != config_hash(b, "pix2pix")


def test_execute_stage_records_and_why_not_done(tmp_path: Path) -> None:
    cfg = chain_cfg(out_dir=str(tmp_path / "pix2pix"), **{"paths.run_dir": str(tmp_path)})
    out_dir = tmp_path / "pix2pix"
    digest = config_hash(cfg, "pix2pix")
    assert why_not_done(out_dir, digest, {}) == "not run yet"

    def write(ctx):
        (ctx.out_dir / "model.txt").write_text(str(random.random()))
        return ["model.txt"]

    record = execute_stage("pix2pix", write, cfg)
    assert why_not_done(out_dir, digest, {}) is None
    assert json.loads((out_dir / "done.json").read_text()) == record
    random.seed(0)
    assert (out_dir / "model.txt").read_text() == str(random.random())
    assert why_not_done(out_dir, "other", {}) == "config changed"
    assert why_not_done(out_dir, digest, {"toyfaces": "abc"}) == "toyfaces re-ran"
    (out_dir / "model.txt").unlink()
    assert why_not_done(out_dir, digest, {}) == "outputs missing: model.txt"


def test_failed_attempt_is_resumed_only_with_the_same_config(tmp_path: Path) -> None:
    cfg = chain_cfg(out_dir=str(tmp_path / "s"), **{"paths.run_dir": str(tmp_path)})
    seen = []

    def boom(ctx):
        seen.append(ctx.resume)
        raise RuntimeError("killed")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            execute_stage("pix2pix", boom, cfg)
    assert why_not_done(tmp_path / "s", config_hash(cfg, "pix2pix"), {}) == "interrupted"
    cfg.pix2pix.ngf = 32
    with pytest.raises(RuntimeError):
        execute_stage("pix2pix", boom, cfg)
    assert seen == [False, True, False]


def test_overrides_are_routed_by_stage_namespace() -> None:
    overrides = [
        "+experiment=smoke",
        "seed=3",
        "pix2pix.ngf=16",
        "pix2pix/model=unet_128",
        "toyfaces.size=32",
        "pipeline.force=[toyfaces]",
        "trainer=gpu",
    ]
    assert overrides_for_stage(overrides, "toyfaces", CHAIN) == [
        "+experiment=smoke",
        "seed=3",
        "toyfaces.size=32",
        "trainer=gpu",
    ]
    assert overrides_for_stage(overrides, "pix2pix", CHAIN) == [
        "+experiment=smoke",
        "seed=3",
        "pix2pix.ngf=16",
        "pix2pix/model=unet_128",
        "trainer=gpu",
    ]
    assert first_key_component("+pix2pix.model@x") == "pix2pix"


def composed(stage: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(stage, ["+experiment=smoke", *overrides])


@pytest.mark.parametrize("stage", ["toyfaces", "pix2pix"])
def test_hash_ignores_the_stage_list_and_how_the_root_is_spelled(stage: str) -> None:
    base = config_hash(composed(stage), stage)
    assert config_hash(composed(stage, "pipeline.stages=[toyfaces]"), stage) == base
    assert config_hash(composed(stage, "pipeline.stages=[pix2pix,cartoonize]"), stage) == base
    for root in (".", "./", os.getcwd(), os.getcwd() + "/"):
        assert config_hash(composed(stage, f"paths.root_dir={root}"), stage) == base, root
    assert config_hash(composed(stage, "paths.root_dir=/elsewhere"), stage) == base
    assert config_hash(composed(stage, "seed=1"), stage) != base


@pytest.mark.parametrize("content", ["[]", "{}", '"done"', "{broken", '{"config_hash": 1}'])
def test_a_done_json_of_the_wrong_shape_is_not_done(tmp_path: Path, content: str) -> None:
    (tmp_path / "done.json").write_text(content)
    assert why_not_done(tmp_path, "abc", {}) is not None
    assert read_record(tmp_path) is None or read_record(tmp_path) == json.loads(content)
    assert upstream_run_ids(chain_cfg(), "pix2pix", tmp_path.parent) == {}


def test_done_json_with_outputs_of_the_wrong_shape_is_not_done(tmp_path: Path) -> None:
    record = {"config_hash": "abc", "upstream": {}, "outputs": "model.pt"}
    (tmp_path / "done.json").write_text(json.dumps(record))
    assert why_not_done(tmp_path, "abc", {}) == "done.json unreadable"
    (tmp_path / "done.json").write_text(json.dumps(record | {"outputs": [3]}))
    assert why_not_done(tmp_path, "abc", {}) == "outputs missing: 3"


def test_done_json_records_sha256_and_loaders_verify_it(tmp_path: Path) -> None:
    cfg = chain_cfg(out_dir=str(tmp_path / "pix2pix"), **{"paths.run_dir": str(tmp_path)})

    def write(ctx):
        (ctx.out_dir / "generator.pt").write_bytes(b"weights" * 100)
        (ctx.out_dir / "checkpoints").mkdir()
        (ctx.out_dir / "checkpoints" / "last.ckpt").write_bytes(b"state")
        (ctx.out_dir / "grids").mkdir()
        return ["generator.pt", "checkpoints/last.ckpt", "grids"]

    record = execute_stage("pix2pix", write, cfg)
    out = tmp_path / "pix2pix"
    assert record["sha256"] == {
        "generator.pt": hashlib.sha256(b"weights" * 100).hexdigest(),
        "checkpoints/last.ckpt": hashlib.sha256(b"state").hexdigest(),
    }
    verify_recorded_sha256(out / "generator.pt")
    verify_recorded_sha256(out / "checkpoints" / "last.ckpt")
    flipped = bytearray((out / "generator.pt").read_bytes())
    flipped[10] ^= 0x01
    (out / "generator.pt").write_bytes(bytes(flipped))
    with pytest.raises(UserError, match=r"generator.pt does not match the SHA-256 that pix2pix"):
        verify_recorded_sha256(out / "generator.pt")
    (tmp_path / "mine.pt").write_bytes(b"a user's own file")
    verify_recorded_sha256(tmp_path / "mine.pt")


def test_stage_function_errors_from_the_environment_are_one_line() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/generator.pt")
    assert environment_error(full) == (
        "/runs/x/generator.pt: No space left on device; the disk is full; free some space, "
        "then run the same command again"
    )
    read_only = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs")
    assert "choose another folder (paths.root_dir=...)" in environment_error(read_only)
    assert environment_error(FileNotFoundError(errno.ENOENT, "No such file", "x")) is None


def test_stage_help_names_the_stage_and_shows_the_commented_defaults() -> None:
    text = stage_help("stylegan3_photo")
    assert text.startswith("stylegan3_photo: a toonforge stage; its parameters are stylegan3_photo")
    assert "python -m src.stylegan3 --config-name=stylegan3_photo" in text
    assert "Parameters (configs/stylegan3/default.yaml):" in text
    assert (
        "  # Add x-flipped copies of every image (doubles a small dataset).\n  mirror: false"
        in text
    )
    assert requested_config_name(["a=1", "--config-name=x"], "y") == "x"
    assert requested_config_name(["-cn", "x"], "y") == "x"
    assert requested_config_name([], "y") == "y"


def test_help_of_a_stage_module() -> None:
    result = run_module("src.toyfaces", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("toyfaces: a toonforge stage")
    assert "Parameters (configs/toyfaces/default.yaml):" in result.stdout
