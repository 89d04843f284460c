"""Stage parameters are checked against their defaults before any work starts: unknown keys with
the closest known key, wrong types and out-of-range values, each named in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.params import check_params, closest_key, whole_value_overrides
from src.common.stage import CONFIG_DIR
from src.pipeline.runner import ChainRunner
from tests.conftest import TEST_CONFIGS, run_module


@pytest.fixture(scope="module")
def hydra_context() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def problems(stage: str, *overrides: str) -> str | None:
    """The one-line refusal of ``stage`` composed with ``overrides``, or None when accepted."""
    cfg = compose(stage, whole_value_overrides(list(overrides)))
    try:
        check_params(cfg, stage, compose(stage))
    except UserError as err:
        return str(err)
    return None


@pytest.mark.usefixtures("hydra_context")
@pytest.mark.parametrize(
    ("stage", "override", "message"),
    [
        ("pix2pix", "+pix2pix.n_epoch=3", "unknown key pix2pix.n_epoch; did you mean pix2pix.n_epochs"),  # noqa: E501
        ("pix2pix", "+pix2pix.batch_size=4", "did you mean pix2pix.data.batch_size?"),
        ("cleaner", "+cleaner.batchsize=8", "key cleaner.batchsize; did you mean cleaner.batch_size?"),  # noqa: E501
        ("cleaner", "+cleaner.backbone.nmae=x", "did you mean cleaner.backbone.name?"),
        ("toyfaces", "+toyfaces.zzz=1", "unknown key toyfaces.zzz; toyfaces has: bad_fraction,"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_with_the_closest_known_key(
    stage: str, override: str, message: str
) -> None:
    found = problems(stage, override)
    assert found is not None and message in found
    assert "\n" not in found


@pytest.mark.usefixtures("hydra_context")
@pytest.mark.parametrize(
    ("stage", "override", "message"),
    [
        ("pix2pix", "pix2pix.data.batch_size=abc", "batch_size=abc: expected an integer (default 1)"),  # noqa: E501
        ("pix2pix", "pix2pix.data.batch_size=0", "pix2pix.data.batch_size=0: must be >= 1"),
        ("pix2pix", "pix2pix.lr=-0.1", "pix2pix.lr=-0.1: must be > 0"),
        ("pix2pix", "pix2pix.n_epochs=2.5", "pix2pix.n_epochs=2.5: expected an integer"),
        ("pix2pix", "pix2pix.betas=[0.5,x]", "pix2pix.betas[1]=x: expected a number"),
        ("pix2pix", "pix2pix.betas=0.5", "pix2pix.betas=0.5: expected a list"),
        ("pix2pix", "pix2pix.generator=3", "pix2pix.generator=3: expected a mapping"),
        ("pix2pix", "pix2pix.generator.use_dropout=maybe", "expected true or false"),
        ("cleaner", "cleaner.val_fraction=0", "cleaner.val_fraction=0: must be > 0"),
        ("cleaner", "cleaner.target_precision=1.5", "must be <= 1"),
        ("toyfaces", "toyfaces.size=null", "toyfaces.size=null: expected an integer"),
        ("blend", "blend.weights=abc", "weights=abc: expected a list or a mapping or a number"),
        ("bot", "bot.max_pixels=abc", "bot.max_pixels=abc: expected an integer"),
        ("bot", "bot.max_pixels=0", "bot.max_pixels=0: must be >= 1"),
        ("bot", "bot.rate_window_s=0", "bot.rate_window_s=0: must be > 0"),
    ],
)  # fmt: skip
def test_wrong_types_and_ranges_are_refused_with_the_key(
    stage: str, override: str, message: str
) -> None:
    found = problems(stage, override)
    assert found is not None and message in found


@pytest.mark.usefixtures("hydra_context")
def test_all_problems_go_into_one_line() -> None:
    found = problems("pix2pix", "pix2pix.lr=x", "+pix2pix.n_epoch=3")
    assert found is not None
    assert "pix2pix.lr=x" in found and "pix2pix.n_epoch" in found and "\n" not in found


@pytest.mark.usefixtures("hydra_context")
@pytest.mark.parametrize(
    ("stage", "overrides"),
    [
        ("pix2pix", ["+pix2pix.trainer.limit_val_batches=2", "pix2pix.data.root=pairs/"]),
        ("pix2pix", ["pix2pix.lr=1", "pix2pix.data.batch_size=4", "pix2pix.ckpt_path=last"]),
        ("stylegan3", ["stylegan3.data=x", "+stylegan3.G.magnitude_ema_beta=0.9", "stylegan3.kimg=1.6"]),  # noqa: E501
        ("cleaner", ["+cleaner.backbone.kwargs.drop_path_rate=0.1"]),
        ("cartoonize", ["+cartoonize.detector.options.scale=1.1", "input=x.jpg"]),
        ("bot", ["+bot.models.p2c=g.pt", "bot.allowlist=[1,2]"]),
        ("blend", ["blend.weights={L0: 0.2, L13: 1, default: 0.7}"]),
        ("blend", ["blend.weights={by: resolution, switch_at: 64, width: 0.5}"]),
        ("blend", ["blend.weights=0.5"]),
        ("dataset_gen", ["dataset_gen.seeds=[1,5,9]", "dataset_gen.psi=1"]),
    ],
)  # fmt: skip
def test_valid_overrides_pass(stage: str, overrides: list[str]) -> None:
    assert problems(stage, *overrides) is None


@pytest.mark.usefixtures("hydra_context")
@pytest.mark.parametrize(
    "weights",
    ["{L0: 0.2, L13: 1, default: 0.7}", "{by: resolution, switch_at: 64, width: 0.5}", "0.8"],
)
@pytest.mark.parametrize("config", ["blend", "pipeline"])
def test_every_blend_weights_form_replaces_the_experiments_list(config: str, weights: str) -> None:
    """The smoke experiment sets a list; a mapping or a number given after it replaces it whole."""
    cfg = compose(config, whole_value_overrides(["+experiment=smoke", f"blend.weights={weights}"]))
    expected = compose(config, [f"+blend.w={weights}"]).blend.w
    assert cfg.blend.weights == expected
    assert isinstance(cfg.blend.weights, DictConfig) == weights.startswith("{")


def test_whole_value_overrides_touch_only_plain_overrides_of_their_keys() -> None:
    given = ["--cfg", "job", "blend.weights={a: 1}", "+blend.weights=[1]", "blend.base=x", "-m"]
    assert whole_value_overrides(given) == [
        "--cfg",
        "job",
        "~blend.weights",
        "+blend.weights={a: 1}",
        "+blend.weights=[1]",
        "blend.base=x",
        "-m",
    ]


def test_closest_key_compares_within_the_namespace() -> None:
    known = ["pix2pix.lr", "pix2pix.n_epochs", "pix2pix.data", "pix2pix.data.batch_size"]
    assert closest_key("pix2pix.n_epoch", known) == "pix2pix.n_epochs"
    assert closest_key("pix2pix.batch_size", known) == "pix2pix.data.batch_size"
    assert closest_key("pix2pix.zzz", known) is None


@pytest.mark.usefixtures("hydra_context")
def test_the_chain_refuses_a_bad_value_of_a_later_stage_up_front() -> None:
    """``pix2pix.data.batch_size=abc`` is found before StyleGAN3 (first in the chain) starts."""
    overrides = ["+experiment=smoke", "pix2pix.data.batch_size=abc"]
    runner = ChainRunner(compose("pipeline", overrides), overrides)
    runner.compose_stage("stylegan3")
    with pytest.raises(UserError, match=r"pix2pix\.data\.batch_size=abc: expected an integer"):
        runner.compose_stage("pix2pix")


def test_a_stage_refuses_an_unknown_key_in_one_line(tmp_path: Path) -> None:
    result = run_module(
        "tests.stages.fake_a",
        f"--config-dir={TEST_CONFIGS}",
        f"paths.root_dir={tmp_path}",
        "+fake_a.cuont=3",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown key fake_a.cuont; did you mean fake_a.count?"
    assert not (tmp_path / "runs" / "default" / "fake_a").exists()


def test_the_chain_refuses_a_bad_type_before_any_stage_runs(tmp_path: Path) -> None:
    result = run_module(
        "src.pipeline",
        f"--config-dir={TEST_CONFIGS}",
        "+experiment=fakes",
        f"paths.root_dir={tmp_path}",
        "fake_b.count=abc",
    )
    assert result.returncode == 2
    assert "error: fake_b.count=abc: expected an integer (default 5)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "chain" / "fake_a").exists()


@pytest.mark.slow
def test_the_bot_refuses_a_bad_setting_before_it_starts() -> None:
    result = run_module("src.serve.bot", "bot.max_pixels=abc", env={"BOT_TOKEN": ""})
    assert result.returncode == 2
    expected = "error: bot.max_pixels=abc: expected an integer (default 40000000)"
    assert result.stderr.strip() == expected
