"""Stage bookkeeping: what the config hash sees, when a stage counts as done, override routing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.common.stage import (
    config_hash,
    execute_stage,
    requested_config_name,
    stage_help,
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
