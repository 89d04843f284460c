"""Every config in configs/ composes and resolves: each stage with each experiment, each group
option with each stage, and every ``_target_`` names something importable."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from src.common.params import check_params
from src.common.stage import CONFIG_DIR

PRIMARY = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Groups every stage shares (from configs/base/default.yaml) and their options.
SHARED_GROUPS = {
    group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    for group in ("paths", "trainer", "logger", "callbacks", "launcher")
}


def compose_stage(stage: str, overrides: list[str], hydra_node: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=stage, overrides=overrides, return_hydra_config=hydra_node)


@functools.cache
def stage_defaults(stage: str) -> DictConfig:
    """What ``stage`` checks its parameters against (see ``src.common.params``)."""
    return compose_stage(stage, [])


def resolved(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    return container


def test_there_is_something_to_compose() -> None:
    assert {"pipeline", "toyfaces"} <= set(PRIMARY)
    assert "smoke" in EXPERIMENTS
    assert all(SHARED_GROUPS.values())


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
@pytest.mark.parametrize("stage", PRIMARY)
def test_each_stage_composes_with_each_experiment(stage: str, experiment: str | None) -> None:
    overrides = [f"+experiment={experiment}"] if experiment else []
    composed = compose_stage(stage, overrides)
    check_params(composed, stage, stage_defaults(stage))
    cfg = resolved(composed)
    assert cfg["stage"] == stage
    assert cfg["out_dir"] == f"{cfg['paths']['run_dir']}/{stage}"
    if experiment:
        assert cfg["run_name"] == experiment or cfg["run_name"]
        assert cfg["pipeline"]["stages"], "an experiment lists its chain"
        for chained in cfg["pipeline"]["stages"]:
            assert chained in PRIMARY, f"{experiment} chains {chained}, which has no config"


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, opts in SHARED_GROUPS.items() for o in opts]
)
@pytest.mark.parametrize("stage", PRIMARY)
def test_each_shared_group_option_composes_with_each_stage(
    stage: str, group: str, option: str
) -> None:
    cfg = compose_stage(stage, [f"{group}={option}", "+experiment=smoke"], hydra_node=True)
    assert cfg.hydra.runtime.choices[group] == option
    hydra_node = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    resolved(cfg)
    if group == "launcher":
        launcher = "SlurmLauncher" if option == "submitit_slurm" else "LocalLauncher"
        assert hydra_node.launcher._target_.endswith(launcher)


def test_experiment_is_not_in_any_defaults_list() -> None:
    """With ``experiment: null`` in a defaults list, ``+experiment=`` fails ("Multiple values")."""
    for path in CONFIG_DIR.rglob("*.yaml"):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        groups = [next(iter(d)) if isinstance(d, dict) else d for d in defaults]
        assert not [g for g in groups if "experiment" in g], path


def all_targets() -> list[tuple[Path, str]]:
    found = []

    def walk(node: object, path: Path) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.append((path, node["_target_"]))
            for value in node.values():
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), path)
    return found


@pytest.mark.parametrize(("path", "target"), all_targets(), ids=lambda v: str(v)[-40:])
def test_every_target_is_importable(path: Path, target: str) -> None:
    assert callable(get_object(target)), f"{path}: {target}"


def test_overriding_a_key_that_does_not_exist_names_it() -> None:
    with pytest.raises(ConfigCompositionException, match=r"toyfaces\.nope"):
        compose_stage("toyfaces", ["toyfaces.nope=1"])


def test_paths_follow_run_name_and_root() -> None:
    cfg = resolved(compose_stage("toyfaces", ["+experiment=smoke", "paths.root_dir=/data/x"]))
    assert cfg["out_dir"] == "/data/x/runs/smoke/toyfaces"
    assert cfg["paths"]["log_dir"] == "/data/x/runs/smoke/tensorboard"


@pytest.mark.parametrize(("option", "folder"), [("paired", "paired"), ("unpaired", "")])
def test_data_group_instantiates_on_toy_faces(tmp_path: Path, option: str, folder: str) -> None:
    from hydra.utils import instantiate

    from src.common.toyfaces import write_toyfaces

    write_toyfaces(
        tmp_path,
        seed=0,
        size=32,
        train_count=6,
        test_count=2,
        paired_count=8,
        bad_fraction=0.0,
        contact_sheet_pairs=0,
        progress=False,
    )
    overrides = [
        f"+data={option}",
        f"data.root={tmp_path / folder}",
        "data.load_size=32",
        "data.crop_size=32",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.val_fraction=0.25",
    ]
    data = instantiate(compose_stage("toyfaces", overrides).data)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["A"].shape == batch["B"].shape == (2, 3, 32, 32)
    assert batch["A"].min() >= -1 and batch["A"].max() <= 1
