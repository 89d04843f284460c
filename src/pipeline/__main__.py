"""``python -m src.pipeline +experiment=NAME``: run a chain of stages (see ``runner``)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.lifecycle import TERMINATED_EXIT_CODE
from src.common.params import whole_value_overrides
from src.common.stage import CONFIG_DIR, apply_sweep_run_name, fail
from src.pipeline.runner import ChainRunner


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    """Run the experiment's stages in order and report what ran and where its outputs are."""
    apply_sweep_run_name(cfg)
    overrides = HydraConfig.get().overrides
    try:
        runner = ChainRunner(cfg, overrides.task, overrides.hydra)
        outcomes = runner.run()
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to continue", code=130)
    runner.report(outcomes)
    if any(o.status == "interrupted" for o in outcomes):
        raise SystemExit(TERMINATED_EXIT_CODE)
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    sys.argv[1:] = whole_value_overrides(sys.argv[1:])
    main()
